//! Session ticket keys from the Secret named by `--tls-ticket-keys-secret`.
//!
//! Each `ticket-key-<unix seconds>` value of the Secret is a 32-byte key
//! that starts sealing tickets at that time (see
//! [`crate::routing::TicketKeySet`]). In Kubernetes mode the leader writes
//! them; in standalone mode whoever writes the manifest does. A value that
//! is not a key is reported and skipped, the others are used; a missing
//! Secret, or one without keys, leaves each process with keys of its own.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::Ctx;
use super::diagnostics::{Kind, Reason, Subject};
use super::state::ObjectKey;
use crate::routing::{TICKET_KEY_LEN, TICKET_KEY_PREFIX, TicketKeyMaterial, TicketKeySet};

/// A Secret's ticket keys, with a problem for each value that is not one
/// (data key and why).
pub fn parse(secret: &Secret) -> (Vec<TicketKeyMaterial>, Vec<(String, String)>) {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    let data = secret.data.iter().flatten().map(|(k, v)| (k, &v.0[..]));
    let text = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.as_bytes()));
    for (name, value) in data.chain(text) {
        let Some(start) = name.strip_prefix(TICKET_KEY_PREFIX) else {
            continue;
        };
        let not_before = match start.parse::<u64>() {
            Ok(t) => t,
            Err(_) => {
                problems.push((
                    name.clone(),
                    format!("{name:?} does not end in a start time in Unix seconds"),
                ));
                continue;
            }
        };
        match <[u8; TICKET_KEY_LEN]>::try_from(value) {
            Ok(secret) => keys.push(TicketKeyMaterial { not_before, secret }),
            Err(_) => problems.push((
                name.clone(),
                format!(
                    "holds {} bytes; a ticket key is {TICKET_KEY_LEN} random bytes (base64 in data)",
                    value.len()
                ),
            )),
        }
    }
    keys.sort_by_key(|k| k.not_before);
    (keys, problems)
}

/// The ticket keys of Secret `key` for the table; problems are reported on
/// the Secret.
pub(super) fn load(ctx: &mut Ctx<'_>, key: &ObjectKey) -> Option<Arc<TicketKeySet>> {
    let obj = Subject {
        kind: Kind::Secret,
        key,
    };
    let Some(secret) = ctx.state.secrets.get(key) else {
        ctx.diags.report(
            obj,
            "",
            Reason::InvalidSpec,
            format!(
                "--tls-ticket-keys-secret: Secret {}/{} not found; session tickets use keys of this process only",
                key.namespace, key.name
            ),
        );
        return None;
    };
    let (keys, problems) = parse(secret);
    for (name, why) in problems {
        ctx.diags.report(
            obj,
            format!("data[{name:?}]"),
            Reason::InvalidSpec,
            format!("--tls-ticket-keys-secret: {why}; the value is not used"),
        );
    }
    // No keys yet (a Secret the leader has not filled) is not a problem.
    TicketKeySet::new(&keys).map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    #[test]
    fn values_are_parsed_and_bad_ones_named() {
        let mut data = BTreeMap::new();
        data.insert("ticket-key-200".to_owned(), ByteString(vec![2; 32]));
        data.insert("ticket-key-100".to_owned(), ByteString(vec![1; 32]));
        data.insert("ticket-key-short".to_owned(), ByteString(vec![1; 32]));
        data.insert("ticket-key-300".to_owned(), ByteString(vec![1; 31]));
        data.insert("other".to_owned(), ByteString(vec![1; 3]));
        let secret = Secret {
            data: Some(data),
            ..Secret::default()
        };
        let (keys, problems) = parse(&secret);
        assert_eq!(
            keys.iter().map(|k| k.not_before).collect::<Vec<_>>(),
            [100, 200]
        );
        assert_eq!(keys[0].secret, [1; 32]);
        let named: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(named, ["ticket-key-300", "ticket-key-short"]);
        assert!(problems[0].1.contains("holds 31 bytes"), "{problems:?}");
        assert!(problems[1].1.contains("Unix seconds"), "{problems:?}");
    }
}
