//! JSON-RPC 1.0 messages, shaped as `ovs-appctl` speaks them.
//!
//! Request: `{"method": "add-br", "params": ["br0"], "id": 1}`; `params` is an array of strings
//! (missing means none), `id` is any JSON value (missing means `null`) and is echoed back.
//!
//! Response: `{"result": {"text": "...", "data": ...}, "error": null, "id": 1}` on success,
//! `{"result": null, "error": "message", "id": 1}` on failure. On the wire each response is
//! followed by `"\n"`; requests need no separator (a stream of JSON values).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::registry::{CtlError, Reply};

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The command name.
    pub method: String,
    /// The command arguments.
    pub params: Vec<String>,
    /// The request id, echoed in the response.
    pub id: Value,
}

/// Why a well-formed JSON value is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The top-level value is not an object.
    #[error("request must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// There is no `method` member.
    #[error("request has no \"method\"")]
    MissingMethod,
    /// `method` is not a string.
    #[error("\"method\" must be a string, got {0}")]
    MethodNotString(&'static str),
    /// `params` is not an array.
    #[error("\"params\" must be an array of strings, got {0}")]
    ParamsNotArray(&'static str),
    /// An element of `params` is not a string.
    #[error("params[{index}] must be a string, got {kind}")]
    ParamNotString {
        /// Index of the offending element.
        index: usize,
        /// The JSON type found there.
        kind: &'static str,
    },
}

impl Request {
    /// A request for `method` with `params`.
    pub fn new(method: impl Into<String>, params: Vec<String>, id: Value) -> Self {
        Request {
            method: method.into(),
            params,
            id,
        }
    }

    /// Validates a JSON value as a request.
    pub fn from_json(value: &Value) -> Result<Self, RequestError> {
        let Value::Object(object) = value else {
            return Err(RequestError::NotAnObject(kind(value)));
        };
        let method = match object.get("method") {
            None => return Err(RequestError::MissingMethod),
            Some(Value::String(method)) => method.clone(),
            Some(other) => return Err(RequestError::MethodNotString(kind(other))),
        };
        let params = match object.get("params") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(RequestError::ParamNotString {
                        index,
                        kind: kind(other),
                    }),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(RequestError::ParamsNotArray(kind(other))),
        };
        let id = object.get("id").cloned().unwrap_or(Value::Null);
        Ok(Request { method, params, id })
    }

    /// The request as a JSON value.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("method".into(), Value::String(self.method.clone()));
        object.insert("params".into(), json!(self.params));
        object.insert("id".into(), self.id.clone());
        Value::Object(object)
    }

    /// The request as bytes to write, followed by `"\n"`.
    pub fn to_line(&self) -> Vec<u8> {
        line(&self.to_json())
    }
}

/// A response. Exactly one of `result` and `error` is non-null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The command's reply on success.
    pub result: Option<Reply>,
    /// The error message on failure.
    pub error: Option<String>,
    /// The id of the request this answers.
    #[serde(default)]
    pub id: Value,
}

impl Response {
    /// A success response.
    pub fn ok(id: Value, reply: Reply) -> Self {
        Response {
            result: Some(reply),
            error: None,
            id,
        }
    }

    /// An error response.
    pub fn err(id: Value, message: impl Into<String>) -> Self {
        Response {
            result: None,
            error: Some(message.into()),
            id,
        }
    }

    /// The response for a command's outcome.
    pub fn from_outcome(id: Value, outcome: Result<Reply, CtlError>) -> Self {
        match outcome {
            Ok(reply) => Response::ok(id, reply),
            Err(e) => Response::err(id, e.message()),
        }
    }

    /// The response as bytes to write, followed by `"\n"`.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing strings and `Value`s cannot fail; fields go out in declaration order.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Validates a JSON value as a response.
    pub fn from_json(value: Value) -> Result<Self, String> {
        let response: Response =
            serde_json::from_value(value).map_err(|e| format!("not a JSON-RPC response: {e}"))?;
        match (&response.result, &response.error) {
            (Some(_), None) | (None, Some(_)) => Ok(response),
            (None, None) => Err("response has neither \"result\" nor \"error\"".into()),
            (Some(_), Some(_)) => Err("response has both \"result\" and \"error\"".into()),
        }
    }

    /// The reply, or the error message.
    pub fn into_result(self) -> Result<Reply, String> {
        match (self.result, self.error) {
            (_, Some(message)) => Err(message),
            (Some(reply), None) => Ok(reply),
            (None, None) => Err("response has neither \"result\" nor \"error\"".into()),
        }
    }
}

fn line(value: &Value) -> Vec<u8> {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    bytes
}

/// The JSON type name of a value, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ovs_appctl_request() {
        let v = json!({"method": "add-br", "params": ["br0"], "id": 1});
        let req = Request::from_json(&v).unwrap();
        assert_eq!(req, Request::new("add-br", vec!["br0".into()], json!(1)));
        assert_eq!(req.to_json(), v);
    }

    #[test]
    fn missing_params_and_id_default() {
        let req = Request::from_json(&json!({"method": "version"})).unwrap();
        assert!(req.params.is_empty());
        assert_eq!(req.id, Value::Null);
    }

    #[test]
    fn rejects_bad_requests_naming_the_problem() {
        let cases = [
            (json!(5), "request must be a JSON object, got number"),
            (json!({"params": []}), "request has no \"method\""),
            (
                json!({"method": 5}),
                "\"method\" must be a string, got number",
            ),
            (
                json!({"method": "x", "params": "a"}),
                "\"params\" must be an array of strings, got string",
            ),
            (
                json!({"method": "x", "params": ["a", 3]}),
                "params[1] must be a string, got number",
            ),
        ];
        for (value, message) in cases {
            assert_eq!(
                Request::from_json(&value).unwrap_err().to_string(),
                message,
                "{value}"
            );
        }
    }

    #[test]
    fn response_shapes() {
        let ok = Response::ok(json!(1), Reply::new("hi\n", json!({"a": 1})));
        assert_eq!(
            ok.to_line(),
            b"{\"result\":{\"text\":\"hi\\n\",\"data\":{\"a\":1}},\"error\":null,\"id\":1}\n"
        );
        let err = Response::err(json!(2), "nope");
        let v: Value = serde_json::from_slice(&err.to_line()).unwrap();
        assert_eq!(v, json!({"result": null, "error": "nope", "id": 2}));
        assert_eq!(
            Response::from_json(v).unwrap().into_result(),
            Err("nope".to_string())
        );
    }

    #[test]
    fn response_validation() {
        assert!(Response::from_json(json!({"result": null, "error": null, "id": 1})).is_err());
        assert!(Response::from_json(json!([1])).is_err());
        let r =
            Response::from_json(json!({"result": {"text": "x"}, "error": null, "id": 1})).unwrap();
        assert_eq!(r.into_result().unwrap(), Reply::from_text("x"));
    }
}
