//! Protocol switches (`101 Switching Protocols`) on the client's side.

use std::io;
use std::sync::{Arc, Mutex};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use crate::http::io::Upgraded;

/// Where the own server hands over the connection of a request that asked
/// to switch protocols, once the `101` is written. A request extension,
/// hence shareable and cloneable; it is taken only once.
#[derive(Clone)]
pub struct UpgradeSlot(pub Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// The client's side of a protocol switch, resolved once the `101` has
/// been sent.
pub enum ClientUpgrade {
    Own(oneshot::Receiver<Upgraded>),
    Hyper(OnUpgrade),
}

impl ClientUpgrade {
    /// Takes the upgrade handle out of the request.
    pub fn on<B>(req: &mut http::Request<B>) -> ClientUpgrade {
        let own = req
            .extensions_mut()
            .remove::<UpgradeSlot>()
            .and_then(|slot| slot.0.lock().ok()?.take());
        match own {
            Some(rx) => ClientUpgrade::Own(rx),
            None => ClientUpgrade::Hyper(hyper::upgrade::on(req)),
        }
    }

    /// The switched connection.
    pub async fn wait(self) -> io::Result<Upgraded> {
        match self {
            ClientUpgrade::Own(rx) => rx
                .await
                .map_err(|_| io::Error::other("the client connection closed before the switch")),
            ClientUpgrade::Hyper(on) => match on.await {
                Ok(upgraded) => Ok(Box::new(TokioIo::new(upgraded))),
                Err(e) => Err(io::Error::other(e)),
            },
        }
    }
}
