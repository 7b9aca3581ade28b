//! OpenClinica 3 REST metadata as an existing script uses it: sign in through
//! j_spring_security_check, keep the cookie, read `/rest/metadata/{xml|json}/view/...` and the
//! blank printable form.

use crate::{PASSWORD, TestApp, both, client};
use reqwest::StatusCode;
use serde_json::Value;

async fn oc_session(t: &TestApp, user: &str) -> reqwest::Client {
    let c = client();
    let r = c
        .post(t.url("/OpenClinica/j_spring_security_check"))
        .form(&[("j_username", user), ("j_password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    c
}

both!(openclinica_metadata, oc_metadata_t);
async fn oc_metadata_t(t: TestApp) {
    let c = oc_session(&t, "demo_crc").await;

    let r = c.get(t.url("/OpenClinica/rest/metadata/xml/view/S_DEMO/*/*")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/xml"));
    let xml = r.text().await.unwrap();
    assert!(xml.contains("xmlns:OpenClinica=\"http://www.openclinica.org/ns/odm_ext_v130/v3.1\""), "{xml}");
    assert!(xml.contains("OID=\"F_VITAL_SIGNS_V10\"") && xml.contains("F_ADVERSEEVENT"), "{xml}");

    // One form version, through a site OID (the event segment is ignored).
    let r =
        c.get(t.url("/OpenClinica/rest/metadata/xml/view/S_DEMOA/SE_WHATEVER/F_VITAL_SIGNS_V10")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let xml = r.text().await.unwrap();
    assert!(xml.contains("F_VITAL_SIGNS_V10") && !xml.contains("F_ADVERSEEVENT"), "{xml}");

    // JSON in OpenClinica's shape: @-attributes, a single element as an object, repeats as arrays.
    let r = c.get(t.url("/OpenClinica/rest/metadata/json/view/S_DEMO/*/*")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let json: Value = r.json().await.unwrap();
    assert_eq!(json["ODM"]["Study"]["@OID"], "S_DEMO");
    let mdv = &json["ODM"]["Study"]["MetaDataVersion"];
    assert!(mdv["StudyEventDef"].as_array().is_some_and(|e| e.len() == 3), "{mdv}");
    assert!(mdv["ItemDef"].as_array().is_some_and(|i| i.iter().any(|x| x["@OID"] == "I_VITAL_WEIGHT")));

    // The blank printable form.
    let r = c.get(t.url("/OpenClinica/rest/metadata/html/print/S_DEMO/*/F_VITAL_SIGNS_V10")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("Weight (kg)") && html.contains("○ Yes") && html.contains("Heart rate (bpm)"), "{html}");

    for path in [
        "/OpenClinica/rest/metadata/xml/view/S_DEMO/*/F_NOPE_V1",
        "/OpenClinica/rest/metadata/xml/view/S_NOPE",
        "/OpenClinica/rest/metadata/csv/view/S_DEMO",
    ] {
        let r = c.get(t.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = client().get(t.url("/OpenClinica/rest/metadata/xml/view/S_DEMO")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

both!(design_page_shows_the_demo_design, design_page_t);
async fn design_page_t(t: TestApp) {
    let (c, _) = t.session("demo_monitor").await;
    let home = c.get(t.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(home.contains("href='/studies/S_DEMO/design'"), "{home}");
    let r = c.get(t.url("/studies/S_DEMO/design")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    for expected in [
        "production",
        "Baseline",
        "Adverse events",
        "Vital signs",
        "Adverse Events",
        "F_VITAL_SIGNS_V10",
        "print blank form",
    ] {
        assert!(html.contains(expected), "{expected} missing from {html}");
    }
    let r = c.get(t.url("/studies/S_NOPE/design")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = client().get(t.url("/studies/S_DEMO/design")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "anonymous users are sent to sign in");
}
