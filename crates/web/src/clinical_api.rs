//! Clinical data out as ODM, streamed: the native `GET /api/v1/studies/{oid}/clinical-data` and
//! OpenClinica 3's `GET {ctx}/rest/clinicaldata/{xml|json}/view/{study}/{subject}/{event}/{form}`
//! (also under `{ctx}/pages/auth/api/v1/clinicaldata/…` for API-key scripts), with `*` wildcards
//! and the subject given by OID or label (reference `openclinica-api.md` §3.1).
//!
//! XML is streamed as the export reads it (a page of participants at a time); the JSON rendering
//! of OpenClinica 3 (`@`-prefixed attributes, single elements as objects) is built from the
//! whole document, as OpenClinica does. Errors found before the first byte (an unknown study,
//! subject or form) answer with their status; the export then runs in its own task.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use casebook_app::auth::Principal;
use casebook_app::export::ClinicalExport;
use casebook_app::{App, AppError};

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;

/// Native routes (under `/api/v1`).
pub fn routes() -> Router<AppState> {
    Router::new().route("/studies/{oid}/clinical-data", get(native)).route(
        "/studies/{oid}/clinical-data/import",
        axum::routing::post(import).layer(axum::extract::DefaultBodyLimit::disable()),
    )
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportQuery {
    file_name: Option<String>,
    #[serde(default)]
    dry_run: bool,
    /// `all-or-nothing` (default) or `per-record`.
    mode: Option<String>,
}

/// Imports an ODM ClinicalData file (the body), all or nothing; with `?dry_run=true` only checks
/// it. The answer is the report either way (`accepted`, every problem with its place).
async fn import(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<ImportQuery>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let per_record = match q.mode.as_deref().unwrap_or("all-or-nothing") {
        "all-or-nothing" => false,
        "per-record" => true,
        other => {
            return Err(AppError::invalid("mode", format!("'{other}' is not all-or-nothing or per-record")))
                .rid(&headers);
        }
    };
    let upload = crate::upload::spool(&s, req).await.rid(&headers)?;
    let name = q.file_name.or(upload.file_name).unwrap_or_else(|| "clinical-data.xml".to_owned());
    let report = if q.dry_run {
        s.app.check_clinical_source(&p, &oid, &name, upload.source).await.rid(&headers)?
    } else if per_record {
        s.app.import_clinical_per_record(&p, &oid, &name, upload.source).await.rid(&headers)?
    } else {
        s.app.import_clinical(&p, &oid, &name, upload.source).await.rid(&headers)?
    };
    // Per record, the log says what failed; all or nothing, a refusal is an error.
    let status =
        if report.accepted || (per_record && !q.dry_run) { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    Ok((status, axum::Json(report)).into_response())
}

/// OpenClinica routes (under the OpenClinica context path).
pub fn openclinica_routes() -> Router<AppState> {
    Router::new()
        .route("/rest/clinicaldata/{format}/{mode}/{study}/{subject}/{event}/{form}", get(openclinica))
        .route("/pages/auth/api/v1/clinicaldata/{format}/{mode}/{study}/{subject}/{event}/{form}", get(openclinica))
        .route("/pages/auth/api/clinicaldata/{study}/{subject}/{event}/{form}", get(openclinica4))
}

#[derive(Debug, Default, serde::Deserialize)]
struct OpenClinica4Query {
    #[serde(rename = "includeMetadata")]
    include_metadata: Option<String>,
    #[serde(rename = "includeDNs")]
    include_dns: Option<String>,
    #[serde(rename = "includeAudits")]
    include_audits: Option<String>,
}

/// OpenClinica 4: `Accept: application/json` selects JSON, anything else XML; the metadata is
/// included unless `includeMetadata=n`.
async fn openclinica4(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((study, subject, event, form)): Path<(String, String, String, String)>,
    Query(q): Query<OpenClinica4Query>,
) -> ApiResult<Response> {
    let with_metadata =
        !matches!(q.include_metadata.as_deref().map(str::to_ascii_lowercase).as_deref(), Some("n" | "no"));
    let notes = yes_no(q.include_dns.as_deref()).rid(&headers)?;
    let audit_logs = yes_no(q.include_audits.as_deref()).rid(&headers)?;
    let req = ClinicalExport {
        participant: Some(subject),
        event: Some(event),
        form: Some(form),
        openclinica: true,
        notes,
        audit_logs,
        ..ClinicalExport::default()
    };
    let json =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"));
    if json {
        return match s.app.export_clinical_json(&p, &study, &req, with_metadata).await.rid(&headers)? {
            None => Ok(StatusCode::NO_CONTENT.into_response()),
            Some(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()),
        };
    }
    if !with_metadata {
        return stream_xml(s.app.clone(), p, study, req, false).await.rid(&headers);
    }
    let mut xml = Vec::new();
    s.app
        .export_clinical_with_metadata(&p, &study, &req, |chunk| {
            xml.extend_from_slice(&chunk);
            std::future::ready(true)
        })
        .await
        .rid(&headers)?;
    Ok(([(header::CONTENT_TYPE, "application/xml; charset=utf-8")], xml).into_response())
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeQuery {
    /// `odm13` (default), `odm13-oc` or `odm2`.
    format: Option<String>,
    participant: Option<String>,
    event: Option<String>,
    form: Option<String>,
    /// RFC 3339: only what changed after this time.
    changed_since: Option<String>,
    /// The design (`Study`) and `AdminData` with the clinical data, in one document.
    #[serde(default)]
    full: bool,
    /// `OpenClinica:DiscrepancyNotes` (odm13-oc).
    #[serde(default)]
    notes: bool,
    /// `OpenClinica:AuditLogs` (odm13-oc).
    #[serde(default)]
    audit_logs: bool,
    /// Standard ODM `AuditRecord`s.
    #[serde(default)]
    audit_records: bool,
    /// Standard ODM `Signature`s.
    #[serde(default)]
    signatures: bool,
}

async fn native(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path(oid): Path<String>,
    Query(q): Query<NativeQuery>,
) -> ApiResult<Response> {
    let (openclinica, odm20) = match q.format.as_deref().unwrap_or("odm13") {
        "odm13" => (false, false),
        "odm13-oc" => (true, false),
        "odm2" => (false, true),
        other => {
            return Err(AppError::invalid("format", format!("'{other}' is not odm13, odm13-oc or odm2"))).rid(&headers);
        }
    };
    let mut wrong = Vec::new();
    for (set, name) in [(q.notes, "notes"), (q.audit_logs, "audit_logs")] {
        if set && !openclinica {
            wrong.push(casebook_domain::FieldError::new(
                name,
                "is OpenClinica's extension: ask for format=odm13-oc (or audit_records=true for standard ODM)",
            ));
        }
    }
    if !wrong.is_empty() {
        return Err(AppError::Validation(wrong)).rid(&headers);
    }
    let changed_since = changed_since(q.changed_since.as_deref()).rid(&headers)?;
    let req = ClinicalExport {
        participant: q.participant,
        event: q.event,
        form: q.form,
        openclinica,
        changed_since,
        odm20,
        notes: q.notes,
        audit_logs: q.audit_logs,
        audit_records: q.audit_records,
        signatures: q.signatures,
        ..ClinicalExport::default()
    };
    stream_xml(s.app.clone(), p, oid, req, q.full).await.rid(&headers)
}

/// A `changed_since` parameter: an RFC 3339 time, named when it is not one.
pub(crate) fn changed_since(value: Option<&str>) -> Result<Option<time::OffsetDateTime>, AppError> {
    value
        .map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| AppError::invalid("changed_since", format!("'{t}' is not an RFC 3339 time")))
        })
        .transpose()
}

#[derive(Debug, Default, serde::Deserialize)]
struct OpenClinicaQuery {
    #[serde(rename = "includeDNs")]
    include_dns: Option<String>,
    #[serde(rename = "includeAudits")]
    include_audits: Option<String>,
}

fn yes_no(v: Option<&str>) -> Result<bool, AppError> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("n" | "no") => Ok(false),
        Some("y" | "yes") => Ok(true),
        Some(other) => Err(AppError::invalid("includeDNs", format!("'{other}' is not y, yes, n or no"))),
    }
}

async fn openclinica(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((format, mode, study, subject, event, form)): Path<(String, String, String, String, String, String)>,
    Query(q): Query<OpenClinicaQuery>,
) -> ApiResult<Response> {
    let notes = yes_no(q.include_dns.as_deref()).rid(&headers)?;
    let audit_logs = yes_no(q.include_audits.as_deref()).rid(&headers)?;
    let req = ClinicalExport {
        participant: Some(subject),
        event: Some(event),
        form: Some(form),
        openclinica: true,
        notes,
        audit_logs,
        ..ClinicalExport::default()
    };
    if mode != "view" && mode != "print" {
        return Err(AppError::NotFound("clinical data view (use view or print)")).rid(&headers);
    }
    match format.as_str() {
        "html" => match s.app.export_clinical_html(&p, &study, &req).await.rid(&headers)? {
            None => Ok(StatusCode::NO_CONTENT.into_response()),
            Some(html) => Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()),
        },
        "xml" => stream_xml(s.app.clone(), p, study, req, false).await.rid(&headers),
        "json" => match s.app.export_clinical_json(&p, &study, &req, false).await.rid(&headers)? {
            None => Ok(StatusCode::NO_CONTENT.into_response()),
            Some(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()),
        },
        _ => Err(AppError::NotFound("clinical data format (use xml, json or html)")).rid(&headers),
    }
}

/// Runs the export in its own task and streams its pages as the body; an error before the
/// first page is answered as an error.
async fn stream_xml(
    app: App,
    who: Principal,
    study: String,
    req: ClinicalExport,
    full: bool,
) -> Result<Response, AppError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, AppError>>(4);
    tokio::spawn(async move {
        let sender = tx.clone();
        let sink = move |chunk| {
            let sender = sender.clone();
            async move { sender.send(Ok(chunk)).await.is_ok() }
        };
        let result = if full {
            app.export_full(&who, &study, &req, sink).await
        } else {
            app.export_clinical(&who, &study, &req, sink).await
        };
        if let Err(e) = result {
            let _ = tx.send(Err(e)).await;
        }
    });
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e),
        None => Vec::new(),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Some(Ok(chunk)) => Some((Ok(chunk), rx)),
            Some(Err(e)) => {
                tracing::error!(error = %e, "the export failed after it started; the response is cut short");
                Some((Err(std::io::Error::other("export failed")), rx))
            }
            None => None,
        }
    });
    let body = futures_util::StreamExt::chain(futures_util::stream::once(std::future::ready(Ok(first))), rest);
    Ok(([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], Body::from_stream(body)).into_response())
}
