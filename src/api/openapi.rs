//! `GET /v1/openapi.json`: the OpenAPI 3 description of the control API, generated from the handlers'
//! annotations (served without the bearer token so tools can read it).

use super::{AppState, calls, dashboard, egresses, health, ingresses, rooms, sessions, sfu_proxy};
use axum::Router;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "sfu-gateway control API", description = "Bridges SIP and RTMP into the Cloudflare Realtime SFU. \
        Every /v1 route needs `Authorization: Bearer <api.token>` when a token is configured. Errors are \
        `{\"error\": {\"code\", \"message\"}}`."),
    paths(
        health::healthz, health::readyz, health::metrics, dashboard::page,
        sessions::list, sessions::one, sessions::stop,
        ingresses::create, ingresses::list, ingresses::one, ingresses::remove,
        egresses::create, egresses::list, egresses::one, egresses::update, egresses::remove,
        calls::list, calls::one, calls::hang_up, calls::dtmf, calls::dial,
        rooms::list, rooms::one, rooms::remove_room, rooms::upsert_participant, rooms::get_participant,
        rooms::remove_participant, rooms::events,
        sfu_proxy::forward,
    ),
    components(schemas(
        ingresses::CreateIngress, ingresses::VideoOptions, egresses::CreateEgress, egresses::UpdateEgress, egresses::Output,
        crate::egress::store::TrackRef, crate::egress::store::VideoOut, crate::egress::store::AudioOut,
        crate::rooms::Participant, crate::rooms::PublishedTrack, crate::rooms::ParticipantSource,
        crate::sfu::api::TrackKind, crate::ingress::store::VideoMode,
        calls::Digits, calls::Dial, crate::ingress::sip::CallView, crate::ingress::sip::CallState,
        crate::ingress::sip::CallDirection, crate::ingress::sip::CallStats, crate::ingress::sip::CallSfu,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(|| async { axum::Json(ApiDoc::openapi()) }))
}
