use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tokio::sync::{oneshot, watch};

use super::ResponseBody;
use super::live::Slot;
use crate::socket::PipelineLink;

pin_project! {
    /// The response future of [`WebSocketService`](super::WebSocketService).
    ///
    /// For a WebSocket request it resolves with the handshake response as
    /// soon as the handler accepts, and hands the inner future to a task
    /// that keeps it until the socket is finished (see the
    /// [module docs](crate::layer)).
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        PassThrough {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<Response<ResponseBody<B>>>,
        },
        Upgrading {
            // Boxed so it can move to the holding task after being polled.
            future: Option<Pin<Box<F>>>,
            accepted: Option<oneshot::Receiver<Response<()>>>,
            finished: Option<watch::Receiver<bool>>,
            pipeline: Arc<PipelineLink>,
            // The socket's place in the layer's count, held until it is
            // finished.
            slot: Option<Slot>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn pass_through(future: F) -> Self {
        ResponseFuture {
            state: State::PassThrough { future },
        }
    }

    pub(crate) fn rejected(status: StatusCode, retry_after: Option<HeaderValue>) -> Self {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = status;
        if let Some(retry_after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        ResponseFuture {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn upgrading(
        future: F,
        accepted: oneshot::Receiver<Response<()>>,
        finished: watch::Receiver<bool>,
        pipeline: Arc<PipelineLink>,
        slot: Slot,
    ) -> Self {
        ResponseFuture {
            state: State::Upgrading {
                future: Some(Box::pin(future)),
                accepted: Some(accepted),
                finished: Some(finished),
                pipeline,
                slot: Some(slot),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::PassThrough { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(ResponseBody::new))),
            StateProj::Rejected { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            StateProj::Upgrading {
                future,
                accepted,
                finished,
                pipeline,
                slot,
            } => {
                let inner = future.as_mut().expect("polled after completion");
                if let Poll::Ready(output) = inner.as_mut().poll(cx) {
                    // The handler returned. If it accepted first (and gave
                    // the socket to someone else), the 101 wins and the
                    // finished future is kept until the socket is done.
                    let handshake = accepted.as_mut().and_then(|rx| rx.try_recv().ok());
                    let Some(handshake) = handshake else {
                        future.take();
                        slot.take();
                        return Poll::Ready(output.map(|response| response.map(ResponseBody::new)));
                    };
                    drop(output);
                    hold(
                        future.take(),
                        true,
                        finished.take(),
                        pipeline.clone(),
                        slot.take(),
                    );
                    return Poll::Ready(Ok(handshake.map(|()| ResponseBody::empty())));
                }
                if let Some(rx) = accepted.as_mut() {
                    match Pin::new(rx).poll(cx) {
                        Poll::Ready(Ok(handshake)) => {
                            hold(
                                future.take(),
                                false,
                                finished.take(),
                                pipeline.clone(),
                                slot.take(),
                            );
                            return Poll::Ready(Ok(handshake.map(|()| ResponseBody::empty())));
                        }
                        // The upgrade handle was dropped without accepting:
                        // only the handler's own response is left.
                        Poll::Ready(Err(_)) => *accepted = None,
                        Poll::Pending => {}
                    }
                }
                Poll::Pending
            }
        }
    }
}

/// Keeps the inner future alive on a task of its own (polling it to
/// completion if it has not completed) until the socket is finished.
///
/// If it completes while still waiting on its socket (a timeout inside
/// the layer, typically), nothing would poll that wait again: the socket
/// is closed with 1011 and freed, and the completed future — with the
/// guards it holds — is dropped once that has finished the socket.
fn hold<F>(
    future: Option<Pin<Box<F>>>,
    completed: bool,
    finished: Option<watch::Receiver<bool>>,
    pipeline: Arc<PipelineLink>,
    slot: Option<Slot>,
) where
    F: Future + Send + 'static,
{
    let (Some(mut future), Some(mut finished)) = (future, finished) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::error!(
            "websocket accepted outside a tokio runtime; the request pipeline ends now"
        );
        return;
    };
    runtime.spawn(async move {
        if !completed {
            // The handler's response is discarded: the 101 is already sent.
            let _ = poll_fn(|cx| pipeline.poll_in(future.as_mut(), cx)).await;
            pipeline.completed().await;
        }
        // Completes when the socket is closed or aborted, or (as an error)
        // when it is dropped.
        let _ = finished.wait_for(|done| *done).await;
        drop(future);
        drop(slot);
    });
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
