//! etcd watch responses turned into muster's [`WatchStream`].
//!
//! One etcd response becomes one [`WatchBatch`]: etcd never splits a revision's events across
//! responses (unless a client asks for fragments, which we do not), so a batch always holds
//! whole revisions. A response with no events is a progress notification. The response that
//! confirms the watch is consumed by [`open`] before the stream is handed out. A cancel with a
//! compaction revision becomes [`Error::Compacted`]; a cancel for "permission denied" (a
//! prefix outside the user's roles) becomes [`Error::Rejected`]; any other cancel, an error
//! or the end of etcd's stream becomes [`Error::Unavailable`]; after that the stream ends.

use std::time::Duration;

use futures::StreamExt;
use muster_core::{Error, Event, EventKind, KeyValue, Result, Revision, WatchBatch, WatchStream};

use crate::error::{Ctx, ErrorMapper};

/// Opens a watch on `prefix` from revision `from` (inclusive) and waits for etcd to confirm.
pub(crate) async fn open(
    mut client: etcd_client::WatchClient,
    prefix: &str,
    from: Revision,
    timeout: Duration,
    errors: ErrorMapper,
) -> Result<WatchStream> {
    let ctx = Ctx::new("watch").key(prefix);
    let options = etcd_client::WatchOptions::new()
        .with_prefix()
        .with_progress_notify()
        .with_start_revision(from);
    let opening = async {
        let mut stream = client
            .watch(prefix, Some(options))
            .await
            .map_err(|err| errors.map(&ctx, err))?;
        let first = stream
            .message()
            .await
            .map_err(|err| errors.map(&ctx, err))?;
        Ok::<_, Error>((stream, first))
    };
    let (stream, first) = match tokio::time::timeout(timeout, opening).await {
        Ok(result) => result?,
        Err(_) => return Err(errors.timeout(&ctx, timeout)),
    };
    let mut state = State {
        stream: Some(stream),
        next: from,
        ctx,
        errors,
        pending: None,
    };
    match first {
        None => {
            return Err(state
                .errors
                .unavailable(&state.ctx, "etcd closed the watch stream"))
        }
        Some(response) if response.canceled() => {
            return Err(state.cancelled(&response));
        }
        // The confirmation carries no events; anything else is kept for the first item.
        Some(response) if response.created() && response.events().is_empty() => {}
        Some(response) => state.pending = Some(response),
    }
    Ok(futures::stream::unfold(state, State::next_item).boxed())
}

/// The watch between two items.
struct State {
    /// etcd's stream, with its request sender: dropping the sender would end the watch.
    /// `None` once the watch has ended.
    stream: Option<etcd_client::WatchStream>,
    /// The first revision not yet delivered: what a compaction error reports as requested.
    next: Revision,
    /// "watch <prefix>", for messages.
    ctx: Ctx,
    errors: ErrorMapper,
    /// A response read while opening that still has to be delivered.
    pending: Option<etcd_client::WatchResponse>,
}

impl State {
    async fn next_item(mut self) -> Option<(Result<WatchBatch>, State)> {
        loop {
            let response = match self.pending.take() {
                Some(response) => response,
                None => {
                    let stream = self.stream.as_mut()?;
                    match stream.message().await {
                        Ok(Some(response)) => response,
                        Ok(None) => {
                            let err = self
                                .errors
                                .unavailable(&self.ctx, "etcd closed the watch stream");
                            return self.end_with(err);
                        }
                        Err(err) => {
                            let err = self.errors.map(&self.ctx, err);
                            return self.end_with(err);
                        }
                    }
                }
            };
            if response.canceled() {
                let err = self.cancelled(&response);
                return self.end_with(err);
            }
            if response.created() && response.events().is_empty() {
                continue;
            }
            let batch = batch(&response);
            self.next = self.next.max(batch.revision + 1);
            return Some((Ok(batch), self));
        }
    }

    /// Yields `err` as the last item.
    fn end_with(mut self, err: Error) -> Option<(Result<WatchBatch>, State)> {
        self.stream = None;
        Some((Err(err), self))
    }

    fn cancelled(&self, response: &etcd_client::WatchResponse) -> Error {
        if response.compact_revision() > 0 {
            return Error::Compacted {
                requested: self.next,
                compacted: response.compact_revision(),
            };
        }
        let reason = match response.cancel_reason() {
            "" => "no reason given".to_string(),
            reason => reason.to_string(),
        };
        // etcd refuses a watch outside the user's roles by cancelling it at once, with the
        // gRPC error as the reason: "rpc error: code = PermissionDenied desc = etcdserver:
        // permission denied". Retrying cannot help.
        if reason.contains("permission denied") {
            let message = reason.rsplit("desc = ").next().unwrap_or(&reason);
            return self.errors.permission_denied(&self.ctx, message);
        }
        self.errors
            .unavailable(&self.ctx, format!("etcd cancelled the watch: {reason}"))
    }
}

fn batch(response: &etcd_client::WatchResponse) -> WatchBatch {
    let events: Vec<Event> = response.events().iter().filter_map(event).collect();
    let header = response.header().map_or(0, |h| h.revision());
    let last = events.last().map_or(0, Event::revision);
    WatchBatch {
        revision: header.max(last),
        events,
    }
}

fn event(event: &etcd_client::Event) -> Option<Event> {
    let kind = match event.event_type() {
        etcd_client::EventType::Put => EventKind::Put,
        etcd_client::EventType::Delete => EventKind::Delete,
    };
    Some(Event {
        kind,
        kv: key_value(event.kv()?.clone()),
    })
}

/// etcd's key-value, with the key decoded as UTF-8 (lossily: muster writes only UTF-8 keys).
/// Takes the client's buffers over instead of copying them: a listing holds each key and
/// value once, not a second time while a page is converted.
pub(crate) fn key_value(kv: etcd_client::KeyValue) -> KeyValue {
    let (create_revision, mod_revision, version, lease) = (
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    );
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: String::from_utf8(key)
            .unwrap_or_else(|bad| String::from_utf8_lossy(bad.as_bytes()).into_owned()),
        value,
        create_revision,
        mod_revision,
        version,
        lease,
    }
}
