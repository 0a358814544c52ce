//! Lambda bootstrap for the email sender (MSK event source on email-events).

use devconnect::{config::Config, consumer, delivery::Channel, metrics::Emf, telemetry, AppState};
use devconnect_senders::{aws, consume, email, EMAIL_FUNCTION};
use lambda_runtime::Error;

fn main() -> Result<(), Error> {
    devconnect::bootstrap::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let sender = email::Sender::from_env()?;
    let state = AppState::connect(Config::from_env()?, EMAIL_FUNCTION).await?;
    let ses = email::SesEmail::new(&aws::from_env().await, sender);
    consumer::serve(
        emf,
        (state.with_metrics(metrics), ses),
        |(state, ses): &'static (AppState, email::SesEmail), event| consume(state, ses, Channel::Email, event),
    )
    .await
}
