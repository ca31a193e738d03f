//! The dashboard at `/`: one static page compiled into the binary (no CDN, no build step). It reads the
//! `/v1` API with the operator's token and previews live tracks through the `/v1/sfu` proxy.

use super::AppState;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const PAGE: &str = include_str!("dashboard.html");

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/", get(page)).route("/dashboard", get(page))
}

#[utoipa::path(get, path = "/", tag = "dashboard", responses((status = 200, description = "The dashboard page", content_type = "text/html")))]
pub(super) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
