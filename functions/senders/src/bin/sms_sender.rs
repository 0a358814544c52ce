//! Lambda bootstrap for the SMS sender (MSK event source on sms-events).

use devconnect::{config::Config, consumer, delivery::Channel, metrics::Emf, telemetry, AppState};
use devconnect_senders::{aws, consume, sms, SMS_FUNCTION};
use lambda_runtime::Error;

fn main() -> Result<(), Error> {
    devconnect::bootstrap::runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    telemetry::init();
    let (emf, metrics) = Emf::install(env!("CARGO_BIN_NAME"))?;
    let state = AppState::connect(Config::from_env()?, SMS_FUNCTION).await?;
    let sns = sms::SnsSms::new(&aws::from_env().await);
    consumer::serve(
        emf,
        (state.with_metrics(metrics), sns),
        |(state, sns): &'static (AppState, sms::SnsSms), event| consume(state, sns, Channel::Sms, event),
    )
    .await
}
