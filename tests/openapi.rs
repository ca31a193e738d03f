//! The OpenAPI document at `/v1/openapi.json`: valid JSON OpenAPI 3, served without the token, and listing
//! every route the gateway serves (each also checked to exist on the real server).

mod common;

use common::Gateway;
use serde_json::Value;

const TOKEN: &str = "openapi-test-token";

/// Every route of the control API (the dummy-session test route excepted), with a concrete path to call.
const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/healthz", "/healthz"),
    ("get", "/readyz", "/readyz"),
    ("get", "/metrics", "/metrics"),
    ("get", "/", "/"),
    ("get", "/v1/sessions", "/v1/sessions"),
    ("get", "/v1/sessions/{id}", "/v1/sessions/s_0000000000000000"),
    ("delete", "/v1/sessions/{id}", "/v1/sessions/s_0000000000000000"),
    ("get", "/v1/ingresses", "/v1/ingresses"),
    ("post", "/v1/ingresses", "/v1/ingresses"),
    ("get", "/v1/ingresses/{id}", "/v1/ingresses/ing_0"),
    ("delete", "/v1/ingresses/{id}", "/v1/ingresses/ing_0"),
    ("get", "/v1/egresses", "/v1/egresses"),
    ("post", "/v1/egresses", "/v1/egresses"),
    ("get", "/v1/egresses/{id}", "/v1/egresses/eg_0"),
    ("patch", "/v1/egresses/{id}", "/v1/egresses/eg_0"),
    ("delete", "/v1/egresses/{id}", "/v1/egresses/eg_0"),
    ("get", "/v1/rooms", "/v1/rooms"),
    ("get", "/v1/rooms/{room}", "/v1/rooms/r1"),
    ("delete", "/v1/rooms/{room}", "/v1/rooms/r1"),
    (
        "put",
        "/v1/rooms/{room}/participants/{id}",
        "/v1/rooms/r1/participants/p1",
    ),
    (
        "get",
        "/v1/rooms/{room}/participants/{id}",
        "/v1/rooms/r1/participants/p1",
    ),
    (
        "delete",
        "/v1/rooms/{room}/participants/{id}",
        "/v1/rooms/r1/participants/p1",
    ),
    ("post", "/v1/sfu/{path}", "/v1/sfu/sessions/new"),
    ("get", "/v1/calls", "/v1/calls"),
    ("post", "/v1/calls", "/v1/calls"),
    ("get", "/v1/calls/{id}", "/v1/calls/s_0000000000000000"),
    ("delete", "/v1/calls/{id}", "/v1/calls/s_0000000000000000"),
    ("post", "/v1/calls/{id}/dtmf", "/v1/calls/s_0000000000000000/dtmf"),
];

#[tokio::test]
async fn openapi_lists_every_route() {
    let gateway = Gateway::start(&[("GATEWAY__API__TOKEN", TOKEN)]);
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{}/v1/openapi.json", gateway.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "served without a token");
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["CreateIngress"].is_object());
    assert!(doc["paths"]["/v1/rooms/{room}/events"]["get"].is_object());
    for (method, path, concrete) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        let request = http
            .request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{concrete}", gateway.api),
            )
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body("{}");
        let status = request.send().await.unwrap().status().as_u16();
        // A route that exists answers anything but 404-with-no-route or 405.
        assert_ne!(status, 405, "{method} {concrete}");
        if status == 404 {
            let body: Value = http
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{}{concrete}", gateway.api),
                )
                .bearer_auth(TOKEN)
                .body("{}")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap_or(Value::Null);
            assert_ne!(
                body["error"]["message"], "route not found",
                "{method} {concrete} is not served"
            );
        }
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        ROUTES.len() + 1,
        "undocumented or stale routes (+1: the events stream)"
    );
}
