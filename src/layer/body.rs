//! [`ResponseBody`]: the body of every response that passes through
//! [`WebSocketService`](super::WebSocketService).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`WebSocketService`](super::WebSocketService):
    /// the inner service's body, or an empty one for the responses the
    /// layer makes itself (the handshake's `101`/`200`, and its `403` and
    /// `503`).
    ///
    /// This is what lets any body type sit inside the layer (tower-http's
    /// `TraceLayer` or `CompressionLayer` bodies, `http_body_util::Either`,
    /// a boxed body), as tower-http's own middlewares wrap theirs: the
    /// layer never has to make a `B` of its own, so `B` needs no
    /// `Default`.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner {
            #[pin]
            body: B,
        },
        Empty,
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn new(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody { kind: Kind::Empty }
    }

    /// The inner service's body; `None` for a response the layer made.
    pub fn into_inner(self) -> Option<B> {
        match self.kind {
            Kind::Inner { body } => Some(body),
            Kind::Empty => None,
        }
    }
}

impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        ResponseBody::empty()
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Inner { body } => f.debug_tuple("ResponseBody").field(body).finish(),
            Kind::Empty => f.write_str("ResponseBody(empty)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn wraps_the_inner_body_or_is_empty() {
        let inner = ResponseBody::new(Full::new(bytes::Bytes::from_static(b"hello")));
        assert_eq!(inner.size_hint().exact(), Some(5));
        let collected = inner.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");

        let empty = ResponseBody::<Full<bytes::Bytes>>::empty();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(empty.collect().await.unwrap().to_bytes().is_empty());
    }
}
