//! The HTTPS client of every AWS SDK call (endpoint discovery, MSK IAM credentials,
//! `@connections`, SES, SNS), and the one way this workspace loads an AWS configuration.
//!
//! Why not the SDK's own client (aws-smithy-http-client): it always links HTTP/2 (the h2
//! crate, about 0.45 MB of every bootstrap, issue 14 target 5) and its proxy support,
//! while every AWS API these functions call answers HTTP/1.1 and a Lambda function
//! reaches them without a proxy. This is hyper's pooled client, HTTP/1.1 only, over
//! rustls on ring with the same Mozilla roots as the Kafka connections
//! ([`crate::tls::client_config`]), adapted to the SDK's connector interface.
//!
//! Deadlines: TCP connects give up after [`CONNECT_TIMEOUT`]; when the SDK asks for a
//! read timeout, the response's headers must arrive within connect + read timeout of the
//! call. Every configuration here also sets the SDK's operation and attempt timeouts,
//! which bound the rest (a TLS handshake that hangs, a slow body).

use std::{error::Error as StdError, sync::LazyLock, time::Duration};

use aws_config::{BehaviorVersion, ConfigLoader};
use aws_smithy_runtime_api::client::{
    http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
    },
    orchestrator::{HttpRequest, HttpResponse},
    result::ConnectorError,
    runtime_components::RuntimeComponents,
};
use aws_smithy_types::{body::SdkBody, retry::ErrorKind};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector as TcpConnector, Client},
    rt::TokioExecutor,
};

/// How long a TCP connect to an AWS endpoint may take: the SDK's own default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3_100);

/// `aws_config::defaults` (region and credentials from the environment) with
/// [`client`]: the only way this workspace loads an AWS configuration.
pub fn config_loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(client())
}

/// The process's one AWS HTTPS client: its connection pool is shared by every SDK client.
pub fn client() -> SharedHttpClient {
    static CLIENT: LazyLock<SharedHttpClient> = LazyLock::new(|| SharedHttpClient::new(AwsHttpClient { pool: pool() }));
    CLIENT.clone()
}

/// hyper's pooled HTTP/1.1 client: TLS (rustls on ring) for https://, plain TCP for http://.
fn pool() -> Pool {
    let mut tcp = TcpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let tls = crate::tls::client_config().expect("ring offers TLS 1.2 and 1.3");
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        // http:// stays allowed for local AWS doubles (moto, the local gateway).
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new()).build(https)
}

type Pool = Client<HttpsConnector<TcpConnector>, SdkBody>;

#[derive(Clone, Debug)]
struct AwsHttpClient {
    pool: Pool,
}

impl HttpClient for AwsHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(AwsConnector {
            pool: self.pool.clone(),
            headers_within: headers_within(settings),
        })
    }
}

/// How long a call may wait for the response's headers: unbounded here (the SDK's attempt
/// timeout bounds it) unless the SDK asks for a read timeout.
fn headers_within(settings: &HttpConnectorSettings) -> Option<Duration> {
    settings
        .read_timeout()
        .map(|read| read + settings.connect_timeout().unwrap_or(CONNECT_TIMEOUT))
}

#[derive(Debug)]
struct AwsConnector {
    pool: Pool,
    headers_within: Option<Duration>,
}

impl HttpConnector for AwsConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(err) => return HttpConnectorFuture::ready(Err(ConnectorError::user(err.into()))),
        };
        let response = self.pool.request(request);
        let headers_within = self.headers_within;
        HttpConnectorFuture::new(async move {
            let response = match headers_within {
                Some(limit) => tokio::time::timeout(limit, response)
                    .await
                    .map_err(|elapsed| ConnectorError::timeout(elapsed.into()))?,
                None => response.await,
            }
            .map_err(classify)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|err| ConnectorError::other(err.into(), None))
        })
    }
}

/// Tells the SDK's retry strategy which failures are worth another attempt: a connection
/// that failed or broke is (io), a request the client refused to send is not (user).
fn classify(err: hyper_util::client::legacy::Error) -> ConnectorError {
    let hyper = source_of::<hyper::Error>(&err);
    if err.is_connect() || source_of::<std::io::Error>(&err).is_some() {
        return ConnectorError::io(err.into());
    }
    match hyper {
        Some(h) if h.is_timeout() => ConnectorError::timeout(err.into()),
        Some(h) if h.is_user() => ConnectorError::user(err.into()),
        Some(h) if h.is_closed() || h.is_canceled() => ConnectorError::io(err.into()),
        Some(h) if h.is_incomplete_message() => ConnectorError::other(err.into(), Some(ErrorKind::TransientError)),
        _ => ConnectorError::other(err.into(), None),
    }
}

/// The first error of type `E` in `err`'s source chain.
fn source_of<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    std::iter::successors(Some(err), |&err| err.source()).find_map(|err| err.downcast_ref::<E>())
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::byte_stream::ByteStream;
    use lambda_http::http;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    fn connector(headers_within: Option<Duration>) -> AwsConnector {
        AwsConnector {
            pool: pool(),
            headers_within,
        }
    }

    fn get(url: &str) -> HttpRequest {
        let request = http::Request::get(url).body(SdkBody::empty()).unwrap();
        HttpRequest::try_from(request).unwrap()
    }

    #[tokio::test]
    async fn an_answer_comes_back_with_its_status_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let answer = b"HTTP/1.1 418 I'm a teapot\r\ncontent-length: 5\r\n\r\nshort";
            socket.write_all(answer).await.unwrap();
        });
        let response = connector(Some(Duration::from_secs(5))).call(get(&url)).await.unwrap();
        assert_eq!(response.status().as_u16(), 418);
        let body = ByteStream::new(response.into_body()).collect().await.unwrap();
        assert_eq!(body.into_bytes().as_ref(), b"short");
    }

    #[tokio::test]
    async fn an_endpoint_that_never_answers_fails_as_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // Accepts and holds the connection without a word.
        let held = tokio::spawn(async move { listener.accept().await });
        let call = connector(Some(Duration::from_millis(200))).call(get(&url));
        let error = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the connector's own deadline fires first")
            .unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        drop(held);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_io_error_the_sdk_retries() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let error = connector(None).call(get(&url)).await.unwrap_err();
        assert!(error.is_io(), "{error:?}");
    }

    #[test]
    fn the_response_deadline_is_the_read_timeout_after_the_connect_timeout() {
        let settings = HttpConnectorSettings::builder()
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .build();
        assert_eq!(headers_within(&settings), Some(Duration::from_secs(3)));
        assert_eq!(headers_within(&HttpConnectorSettings::builder().build()), None);
    }
}
