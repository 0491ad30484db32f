//! Turning typed values into payload bytes and back.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Encodes `T` into payload bytes.
pub trait Encoder<T>: Send + Sync + 'static {
    /// The media type written to the `content-type` header.
    fn content_type(&self) -> &'static str;
    /// Encodes a value.
    fn encode(&self, value: &T) -> Result<Bytes>;
}

/// Decodes payload bytes into `T`.
pub trait Decoder<T>: Send + Sync + 'static {
    /// Decodes a payload. A payload that does not decode is a permanent
    /// [`Error::Decode`]: retrying cannot help.
    fn decode(&self, payload: &Bytes) -> Result<T>;
}

/// Encodes `T` into payload bytes and decodes it back.
pub trait Codec<T>: Encoder<T> + Decoder<T> {}

impl<T, C: Encoder<T> + Decoder<T>> Codec<T> for C {}

/// JSON through serde_json: the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<T: Serialize> Encoder<T> for JsonCodec {
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn encode(&self, value: &T) -> Result<Bytes> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| Error::Encode(Box::new(e)))
    }
}

impl<T: DeserializeOwned> Decoder<T> for JsonCodec {
    fn decode(&self, payload: &Bytes) -> Result<T> {
        serde_json::from_slice(payload).map_err(|e| Error::Decode(Box::new(e)))
    }
}

/// The payload as it is: bytes, or UTF-8 text.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Encoder<Bytes> for RawCodec {
    fn content_type(&self) -> &'static str {
        "application/octet-stream"
    }
    fn encode(&self, value: &Bytes) -> Result<Bytes> {
        Ok(value.clone())
    }
}

impl Decoder<Bytes> for RawCodec {
    fn decode(&self, payload: &Bytes) -> Result<Bytes> {
        Ok(payload.clone())
    }
}

impl Encoder<Vec<u8>> for RawCodec {
    fn content_type(&self) -> &'static str {
        "application/octet-stream"
    }
    fn encode(&self, value: &Vec<u8>) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(value))
    }
}

impl Decoder<Vec<u8>> for RawCodec {
    fn decode(&self, payload: &Bytes) -> Result<Vec<u8>> {
        Ok(payload.to_vec())
    }
}

impl Encoder<String> for RawCodec {
    fn content_type(&self) -> &'static str {
        "text/plain; charset=utf-8"
    }
    fn encode(&self, value: &String) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
}

impl Decoder<String> for RawCodec {
    fn decode(&self, payload: &Bytes) -> Result<String> {
        String::from_utf8(payload.to_vec()).map_err(|e| Error::Decode(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u32,
    }

    #[test]
    fn json_round_trip_and_decode_error() {
        let bytes = Encoder::<Order>::encode(&JsonCodec, &Order { id: 7 }).unwrap();
        assert_eq!(&bytes[..], br#"{"id":7}"#);
        let back: Order = JsonCodec.decode(&bytes).unwrap();
        assert_eq!(back, Order { id: 7 });
        let err = Decoder::<Order>::decode(&JsonCodec, &Bytes::from_static(b"{")).unwrap_err();
        assert!(matches!(err, Error::Decode(_)));
        assert!(!err.is_retryable());
    }

    #[test]
    fn raw_text_rejects_invalid_utf8() {
        let r: Result<String> = RawCodec.decode(&Bytes::from_static(&[0xff]));
        assert!(matches!(r, Err(Error::Decode(_))));
    }
}
