//! The WebSocket API's quotas: 128 KB per message, 32 KB per frame (both close the
//! connection with 1009, Message too big), 10 minutes idle and 2 hours per connection
//! (closed with 1001, Going away). Idle and lifetime are shortened here through the
//! gateway's limits; their defaults are AWS's.

use std::time::{Duration, Instant};

use devconnect_tests::{
    socket::{frame_of, with_token, Socket},
    Stack,
};
use futures::{SinkExt, StreamExt};
use local_gateway::websocket::Limits;
use tokio_tungstenite::{
    connect_async,
    tungstenite::{
        protocol::frame::{
            coding::{Data, OpCode},
            Frame,
        },
        Message,
    },
};

use crate::support::{template_with, LocalGateway};

/// The close code the gateway sends within `within`, `None` if the socket stays open
/// (or ends without a close frame).
async fn close_code(socket: &mut Socket, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// A signed-in user's socket on a gateway with `limits`.
async fn socket_with(stack: &Stack, limits: Limits) -> (LocalGateway, Socket) {
    let user = stack.user("socket-limits").await;
    let gateway = LocalGateway::start(stack, &template_with(&[]), |g| g.websocket_limits = limits).await;
    let (socket, _) = connect_async(with_token(&gateway.ws_url(), user.client.token()))
        .await
        .expect("socket refused");
    (gateway, socket)
}

fn ping() -> Message {
    Message::Text(r#"{"action":"ping"}"#.into())
}

#[tokio::test]
async fn a_200_kb_message_closes_the_socket_with_1009_as_api_gateway_does() {
    let stack = Stack::start().await;
    let (_gateway, mut socket) = socket_with(&stack, Limits::default()).await;
    // Sent in 16 KB frames, so only the 128 KB message quota is crossed.
    let big = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(200 * 1024)).into_bytes();
    let chunks: Vec<&[u8]> = big.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(chunk.to_vec(), opcode, i + 1 == chunks.len());
        if socket.send(Message::Frame(frame)).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut socket, Duration::from_secs(5)).await, Some(1009));
}

#[tokio::test]
async fn a_single_40_kb_frame_closes_the_socket_with_1009_though_the_message_is_under_128_kb() {
    let stack = Stack::start().await;
    let (_gateway, mut socket) = socket_with(&stack, Limits::default()).await;
    let message = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(40 * 1024));
    let _ = socket.send(Message::Text(message.into())).await;
    assert_eq!(close_code(&mut socket, Duration::from_secs(5)).await, Some(1009));
}

#[tokio::test]
async fn a_100_kb_message_in_32_kb_frames_is_accepted_and_the_socket_stays_open() {
    let stack = Stack::start().await;
    let (_gateway, mut socket) = socket_with(&stack, Limits::default()).await;
    let message = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(100 * 1024)).into_bytes();
    let chunks: Vec<&[u8]> = message.chunks(32 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(chunk.to_vec(), opcode, i + 1 == chunks.len());
        socket.send(Message::Frame(frame)).await.expect("send a frame");
    }
    socket.send(ping()).await.expect("send a ping");
    assert!(
        frame_of(&mut socket, "pong", Duration::from_secs(5)).await.is_some(),
        "the socket must stay open and answer"
    );
}

#[tokio::test]
async fn a_socket_idle_past_the_idle_timeout_is_closed_with_1001() {
    let stack = Stack::start().await;
    let limits = Limits {
        idle: Duration::from_secs(1),
        ..Limits::default()
    };
    let (_gateway, mut socket) = socket_with(&stack, limits).await;
    let started = Instant::now();
    assert_eq!(close_code(&mut socket, Duration::from_secs(5)).await, Some(1001));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_busy_socket_is_closed_with_1001_at_the_end_of_its_lifetime() {
    let stack = Stack::start().await;
    let limits = Limits {
        lifetime: Duration::from_millis(1500),
        ..Limits::default()
    };
    let (_gateway, mut socket) = socket_with(&stack, limits).await;
    let started = Instant::now();
    let code = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if socket.send(ping()).await.is_err() {
                return None;
            }
            if let Some(code) = close_code(&mut socket, Duration::from_millis(200)).await {
                return Some(code);
            }
        }
    })
    .await
    .expect("closed within 5 s");
    assert_eq!(code, Some(1001));
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "closed after {:?}",
        started.elapsed()
    );
}

#[test]
fn idle_and_lifetime_are_aws_by_default_and_the_environment_can_only_shorten_them() {
    let aws = Limits::from_lookup(|_| None);
    assert_eq!(aws, Limits::default());
    assert_eq!(aws.idle, Duration::from_secs(600));
    assert_eq!(aws.lifetime, Duration::from_secs(7200));
    assert_eq!((aws.message_bytes, aws.frame_bytes), (128 * 1024, 32 * 1024));
    let vars = |idle: &'static str, lifetime: &'static str| {
        move |name: &str| match name {
            "LOCAL_WS_IDLE_SECS" => Some(idle.to_string()),
            "LOCAL_WS_LIFETIME_SECS" => Some(lifetime.to_string()),
            _ => None,
        }
    };
    let short = Limits::from_lookup(vars("1.5", "3"));
    assert_eq!(
        (short.idle, short.lifetime),
        (Duration::from_millis(1500), Duration::from_secs(3))
    );
    let long = Limits::from_lookup(vars("100000", "100000"));
    assert_eq!((long.idle, long.lifetime), (aws.idle, aws.lifetime));
    let nonsense = Limits::from_lookup(vars("-1", "soon"));
    assert_eq!(nonsense, aws);
}
