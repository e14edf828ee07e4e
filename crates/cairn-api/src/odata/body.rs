//! Request bodies: plain JSON objects, or sensenet's form `models=[{...}]`.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Parses a request body into a JSON object. Accepts `{...}`, `models=[{...}]` (form
/// encoded or not) and an empty body (an empty object).
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    // A byte-order mark (what .NET and PowerShell clients often send) is not content.
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text).trim();
    if text.is_empty() {
        return Ok(Map::new());
    }
    let value: Value = if let Some(models) = text.strip_prefix("models=") {
        let decoded = super::options::decode(models);
        let v: Value = serde_json::from_str(&decoded)
            .map_err(|e| ApiError::bad_request(format!("models is not JSON: {e}")))?;
        match v {
            Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            other => other,
        }
    } else {
        serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("the request body is not JSON: {e}")))?
    };
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_models_forms() {
        assert_eq!(object(br#"{"a":1}"#).unwrap()["a"], 1);
        assert_eq!(object(br#"models=[{"a":2}]"#).unwrap()["a"], 2);
        assert_eq!(object(b"models=%5B%7B%22a%22%3A3%7D%5D").unwrap()["a"], 3);
        assert!(object(b"").unwrap().is_empty());
        assert!(object(b"[1]").is_err());
        assert!(object(b"{").is_err());
        assert!(object(b"models=[").is_err());
        assert!(object(&[0xff, 0xfe]).is_err());
    }
}
