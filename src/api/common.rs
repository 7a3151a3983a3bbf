//! Value types shared by the custom resources.
//!
//! They are parsed strictly at deserialization time so that a typo in a
//! manifest surfaces as an error naming the field, both from the API server
//! (through the schema) and from the standalone loader (through serde).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Service port referenced by number or by name.
///
/// Serialized the way Kubernetes writes `IntOrString` port references, so
/// `servicePort: 80` and `servicePort: http` both work in manifests.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(s) => f.write_str(s),
        }
    }
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PortRef::Number(n) => s.serialize_u16(*n),
            PortRef::Name(name) => s.serialize_str(name),
        }
    }
}

impl<'de> Deserialize<'de> for PortRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PortRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (1-65535) or a port name")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortRef, E> {
                match u16::try_from(v) {
                    Ok(n) if n > 0 => Ok(PortRef::Number(n)),
                    _ => Err(E::custom(format!("port {v} is outside 1-65535"))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortRef, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("port {v} is outside 1-65535"))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortRef, E> {
                if v.is_empty() {
                    return Err(E::custom("port name must not be empty"));
                }
                // Numeric strings are port numbers, as in an IntOrString.
                if v.bytes().all(|b| b.is_ascii_digit()) {
                    let n: u64 = v.parse().map_err(|_| E::custom("port number too large"))?;
                    return self.visit_u64(n);
                }
                Ok(PortRef::Name(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for PortRef {
    fn schema_name() -> Cow<'static, str> {
        "PortRef".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // A port name is an IANA service name: at most 15 characters.
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "maxLength": 15,
            "description": "Service port by number or by name."
        })
    }
}

/// A duration written the Go way (`500ms`, `2s`, `1m30s`, `1h`).
///
/// Kubernetes users already write durations like this in every other
/// controller's fields, so the CRDs accept the same spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason} (expected e.g. 500ms, 2s, 1m30s)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError {
            input: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut total_ns: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("missing unit"))?;
            if digits == 0 {
                return Err(err("missing number"));
            }
            let (num, tail) = rest.split_at(digits);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, next) = tail.split_at(unit_len);
            let scale: u128 = match unit {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(err("unknown unit")),
            };
            let value: f64 = num.parse().map_err(|_| err("bad number"))?;
            if !value.is_finite() || value < 0.0 {
                return Err(err("bad number"));
            }
            total_ns = total_ns.saturating_add((value * scale as f64) as u128);
            rest = next;
        }
        let ns = u64::try_from(total_ns).map_err(|_| err("too large"))?;
        Ok(Duration(std::time::Duration::from_nanos(ns)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}ns", d.as_nanos())
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 64,
            "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$",
            "description": "Duration such as 500ms, 2s or 1m30s."
        })
    }
}

/// A number of bytes, written as a plain integer or with a Kubernetes
/// quantity suffix (`512Ki`, `8Mi`, `1Gi`; `k`, `M`, `G` are powers of
/// ten), the way memory sizes are written everywhere else in a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Why a byte size was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size {input:?}: {reason} (expected e.g. 1048576, 512Ki, 8Mi, 1Gi)")]
pub struct ByteSizeError {
    input: String,
    reason: &'static str,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ByteSizeError {
            input: s.to_owned(),
            reason,
        };
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if digits == 0 {
            return Err(err("missing number"));
        }
        let (num, unit) = s.split_at(digits);
        let scale: u64 = match unit {
            "" => 1,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return Err(err("unknown unit")),
        };
        let n: u64 = num.parse().map_err(|_| err("number too large"))?;
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| err("too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, scale) in [
            ("Ti", 1u64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if n >= scale && n.is_multiple_of(scale) {
                return write!(f, "{}{unit}", n / scale);
            }
        }
        write!(f, "{n}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes, e.g. 1048576 or 8Mi")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "maxLength": 32,
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]+(k|M|G|T|Ki|Mi|Gi|Ti)?$"}
            ],
            "description": "Bytes, as an integer or with a suffix: 512Ki, 8Mi, 1Gi."
        })
    }
}

/// A reference to an object in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalObjectRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Result<std::time::Duration, DurationError> {
        s.parse::<Duration>().map(|d| d.0)
    }

    #[test]
    fn durations_parse_go_syntax() {
        assert_eq!(d("2s"), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(d("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(d("1m30s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(d("1.5h"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(d("250us"), Ok(std::time::Duration::from_micros(250)));
    }

    #[test]
    fn durations_reject_garbage() {
        for bad in ["", "5", "s", "5x", "-1s", "1.2.3s", "ms5"] {
            assert!(d(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn duration_display_round_trips() {
        for s in ["2s", "500ms", "90s"] {
            let v: Duration = s.parse().unwrap();
            assert_eq!(v.to_string().parse::<Duration>().unwrap(), v);
        }
    }

    #[test]
    fn byte_sizes_parse_quantities() {
        let b = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(b("1048576"), Ok(1 << 20));
        assert_eq!(b("8Mi"), Ok(8 << 20));
        assert_eq!(b("512Ki"), Ok(512 << 10));
        assert_eq!(b("2G"), Ok(2_000_000_000));
        for bad in ["", "Mi", "8MB", "-1", "8 Mi", "1.5Mi", "99999999999999Ti"] {
            assert!(b(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(ByteSize(8 << 20).to_string(), "8Mi");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        let v: ByteSize = serde_json::from_str("4096").unwrap();
        assert_eq!(v, ByteSize(4096));
        let v: ByteSize = serde_json::from_str("\"1Ki\"").unwrap();
        assert_eq!(v, ByteSize(1024));
        assert!(serde_json::from_str::<ByteSize>("-5").is_err());
    }

    #[test]
    fn port_ref_accepts_numbers_and_names() {
        let n: PortRef = serde_json::from_str("80").unwrap();
        assert_eq!(n, PortRef::Number(80));
        let s: PortRef = serde_json::from_str("\"http\"").unwrap();
        assert_eq!(s, PortRef::Name("http".into()));
        let q: PortRef = serde_json::from_str("\"8080\"").unwrap();
        assert_eq!(q, PortRef::Number(8080));
        assert!(serde_json::from_str::<PortRef>("0").is_err());
        assert!(serde_json::from_str::<PortRef>("70000").is_err());
        assert!(serde_json::from_str::<PortRef>("\"\"").is_err());
    }
}
