use std::sync::Arc;

use tower_layer::Layer;

use super::live::Live;
use super::{DrainHandle, WebSocketService};
use crate::options::{OptionsError, WebSocketOptions};
use crate::stats::WebSocketStats;

/// Adds server-side WebSockets to a tower stack: the analog of ASP.NET
/// Core's `app.UseWebSockets(options)`.
///
/// See the [module docs](crate::layer) for where to place it.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::ServiceBuilder;
/// use tower_websockets::{WebSocketLayer, WebSocketOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let service = ServiceBuilder::new()
///     .layer(WebSocketLayer::new(WebSocketOptions::default())?)
///     .service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct WebSocketLayer {
    options: Arc<WebSocketOptions>,
    live: Arc<Live>,
}

impl WebSocketLayer {
    /// Creates the layer, validating the options once.
    ///
    /// # Errors
    ///
    /// A setting that cannot work, such as a zero close timeout.
    pub fn new(options: WebSocketOptions) -> Result<Self, OptionsError> {
        Ok(WebSocketLayer {
            options: Arc::new(options.validate()?),
            live: Arc::default(),
        })
    }

    /// The validated options.
    pub fn options(&self) -> &WebSocketOptions {
        &self.options
    }

    /// The sockets this layer and the services made from it have live:
    /// WebSocket requests seen and not yet finished (see
    /// [`WebSocketOptions::max_sockets`]).
    pub fn live_sockets(&self) -> usize {
        self.live.count()
    }

    /// A handle that drains this layer's sockets for a graceful shutdown
    /// (see [`DrainHandle`]). Every call returns a handle to the same
    /// drain.
    pub fn drain_handle(&self) -> DrainHandle {
        DrainHandle::new(self.live.clone())
    }

    /// A snapshot of this layer's counters: live sockets, accepts,
    /// rejections by reason, closes by outcome, traffic (see
    /// [`WebSocketStats`]). It takes the layer's registry lock for a walk
    /// over the live sockets: cheap enough for a scrape every few seconds,
    /// not for every request.
    pub fn stats(&self) -> WebSocketStats {
        self.live.stats()
    }
}

impl Default for WebSocketLayer {
    fn default() -> Self {
        WebSocketLayer::new(WebSocketOptions::default()).expect("default options are valid")
    }
}

impl<S> Layer<S> for WebSocketLayer {
    type Service = WebSocketService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WebSocketService::from_parts(inner, self.options.clone(), self.live.clone())
    }
}
