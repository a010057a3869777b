use std::sync::Arc;

use tower_layer::Layer;

use super::WebSocketService;
use super::live::Live;
use crate::options::{OptionsError, WebSocketOptions};

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
