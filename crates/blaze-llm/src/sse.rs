//! A small Server-Sent Events decoder over a byte stream (provider
//! responses): lines split on `\n` (tolerating `\r\n`), blocks on blank
//! lines, `data:` lines joined; with an idle timeout between chunks.

use std::{pin::Pin, time::Duration};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::LlmError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub data: String,
}

pub fn events(
    bytes: Pin<Box<dyn Stream<Item = Result<Bytes, LlmError>> + Send>>,
    idle: Duration,
) -> Pin<Box<dyn Stream<Item = Result<Event, LlmError>> + Send>> {
    let state = (bytes, Vec::<u8>::new(), std::collections::VecDeque::<Event>::new(), false);
    Box::pin(futures::stream::unfold(state, move |(mut bytes, mut buf, mut ready, mut ended)| async move {
        loop {
            if let Some(e) = ready.pop_front() {
                return Some((Ok(e), (bytes, buf, ready, ended)));
            }
            if ended {
                return None;
            }
            match tokio::time::timeout(idle, bytes.next()).await {
                Err(_) => return Some((Err(LlmError::Timeout), (bytes, buf, ready, true))),
                Ok(None) => {
                    ended = true;
                    buf.extend_from_slice(b"\n\n");
                }
                Ok(Some(Err(e))) => return Some((Err(e), (bytes, buf, ready, true))),
                Ok(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
            }
            // Complete blocks end with a blank line. Split on bytes so a
            // multi-byte character cut between two chunks stays intact.
            while let Some((pos, sep)) = block_end(&buf) {
                let block = String::from_utf8_lossy(&buf[..pos]).into_owned();
                buf.drain(..pos + sep);
                let mut event = String::new();
                let mut data = Vec::new();
                for line in block.lines() {
                    let line = line.strip_suffix('\r').unwrap_or(line);
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if !data.is_empty() {
                    ready.push_back(Event { event, data: data.join("\n") });
                }
            }
        }
    }))
}

/// Position and length of the first blank-line separator (`\n\n` or `\r\n\r\n`).
fn block_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blocks_split_across_chunks_are_reassembled() {
        let chunks: Vec<Result<Bytes, LlmError>> = vec![
            Ok(Bytes::from_static(b"event: a\ndata: {\"x\"")),
            Ok(Bytes::from_static(b":1}\r\n\r\ndata: two\n")),
            Ok(Bytes::from_static(b"data: lines\n\n: comment\n\n")),
        ];
        let got: Vec<Event> = events(Box::pin(futures::stream::iter(chunks)), Duration::from_secs(1)).map(|e| e.unwrap()).collect().await;
        assert_eq!(
            got,
            vec![Event { event: "a".into(), data: "{\"x\":1}".into() }, Event { event: String::new(), data: "two\nlines".into() }]
        );
    }

    #[tokio::test]
    async fn multibyte_characters_split_between_chunks_survive() {
        let text = "data: héllo ✓\n\n".as_bytes();
        let chunks: Vec<Result<Bytes, LlmError>> = text.iter().map(|b| Ok(Bytes::copy_from_slice(&[*b]))).collect();
        let got: Vec<Event> = events(Box::pin(futures::stream::iter(chunks)), Duration::from_secs(1)).map(|e| e.unwrap()).collect().await;
        assert_eq!(got, vec![Event { event: String::new(), data: "héllo ✓".into() }]);
    }
}
