//! The OpenAPI document (`/api/v1/openapi.json`) and browsable API docs (`/api/docs`), both
//! served from the binary: nothing is fetched from the internet.

use crate::AppState;
use axum::Json;
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use serde_json::{Map, Value, json};

/// Every endpoint: method, path, tag, summary, request body schema name (if any), success status.
/// method, path, tag, summary, request body schema, success status.
type Endpoint = (&'static str, &'static str, &'static str, &'static str, Option<&'static str>, u16);

pub const ENDPOINTS: &[Endpoint] = &[
    (
        "post",
        "/api/v1/auth/login",
        "auth",
        "Sign in with username and password; starts a browser session and returns its CSRF token",
        Some("Login"),
        200,
    ),
    ("post", "/api/v1/auth/logout", "auth", "End the current browser session", None, 204),
    ("get", "/api/v1/me", "auth", "The caller's account and roles", None, 200),
    (
        "post",
        "/api/v1/me/password",
        "auth",
        "Change the caller's password (needs the current one)",
        Some("PasswordChange"),
        204,
    ),
    (
        "get",
        "/api/v1/me/api-keys",
        "api keys",
        "The caller's API keys (prefix, created, last used, revoked; never the secret)",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/me/api-keys",
        "api keys",
        "Create a named API key; the secret is in the response and shown only once",
        Some("ApiKeyCreate"),
        201,
    ),
    ("delete", "/api/v1/me/api-keys/{id}", "api keys", "Revoke one of the caller's API keys", None, 204),
    ("get", "/api/v1/users", "users", "Users the caller may see (administrators: all)", None, 200),
    (
        "post",
        "/api/v1/users",
        "users",
        "Create a user (administrators); a temporary password is returned when none is given",
        Some("UserCreate"),
        201,
    ),
    ("get", "/api/v1/users/{username}", "users", "One user", None, 200),
    (
        "patch",
        "/api/v1/users/{username}",
        "users",
        "Edit a user's profile or type (administrators)",
        Some("UserPatch"),
        200,
    ),
    ("post", "/api/v1/users/{username}/lock", "users", "Lock an account and end its sessions", None, 200),
    ("post", "/api/v1/users/{username}/unlock", "users", "Unlock an account and clear its failed sign-ins", None, 200),
    (
        "post",
        "/api/v1/users/{username}/remove",
        "users",
        "Remove an account (kept for the record; sessions ended, keys revoked)",
        None,
        200,
    ),
    ("post", "/api/v1/users/{username}/restore", "users", "Restore a removed account", None, 200),
    (
        "post",
        "/api/v1/users/{username}/reset-password",
        "users",
        "Reset to a temporary password that must be changed at next sign-in",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/users/{username}/audit",
        "audit",
        "Audit trail of a user: what they did and what was done to the account",
        None,
        200,
    ),
    ("get", "/api/v1/studies", "studies", "Studies the caller has a role in (administrators: all)", None, 200),
    (
        "post",
        "/api/v1/studies",
        "studies",
        "Create a study in status design (administrators)",
        Some("StudyCreate"),
        201,
    ),
    ("get", "/api/v1/studies/{oid}", "studies", "One study", None, 200),
    ("patch", "/api/v1/studies/{oid}", "studies", "Edit a study's details and parameters", Some("StudyUpdate"), 200),
    (
        "post",
        "/api/v1/studies/{oid}/status",
        "studies",
        "Change a study's status: design → available → frozen → locked (and back)",
        Some("StatusChange"),
        200,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/sites",
        "sites",
        "Sites of a study the caller may see (site users: their own)",
        None,
        200,
    ),
    ("post", "/api/v1/studies/{oid}/sites", "sites", "Create a site", Some("SiteCreate"), 201),
    ("get", "/api/v1/studies/{oid}/sites/{site}", "sites", "One site", None, 200),
    ("patch", "/api/v1/studies/{oid}/sites/{site}", "sites", "Edit a site", Some("StudyUpdate"), 200),
    ("post", "/api/v1/studies/{oid}/sites/{site}/status", "sites", "Change a site's status", Some("StatusChange"), 200),
    (
        "get",
        "/api/v1/studies/{oid}/roles",
        "roles",
        "Role assignments in the study and the sites the caller may see",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/roles",
        "roles",
        "Assign a role at the study or one of its sites",
        Some("RoleAssign"),
        201,
    ),
    (
        "delete",
        "/api/v1/studies/{oid}/roles/{username}",
        "roles",
        "Remove a user's role (query site_oid for a site role)",
        None,
        204,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/audit",
        "audit",
        "Audit trail of a study (site users: their sites); paged with after/limit",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/audit",
        "audit",
        "Audit trail of one record: entity_type and entity_id (administrators)",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/audit/verify",
        "audit",
        "Seal pending audit rows and verify the hash chain (administrators)",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/design",
        "design",
        "The study design: ?version=draft (default), test, production or a number",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/design/forms",
        "design",
        "Upload a form (XLSForm .xlsx/.xls; body = the file, ?file_name=, optional ?event=); every problem is reported with its sheet, row and column",
        None,
        201,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/design/forms",
        "design",
        "Forms and their versions (?version=draft|test|production|N)",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/design/forms/{form}/versions/{version}",
        "design",
        "One form version, whole: sections, groups, items, code lists, checks and logic",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/design/items",
        "design",
        "Every item (?form=OID, ?version=…) with its type, group and the versions that contain it",
        None,
        200,
    ),
    ("get", "/api/v1/studies/{oid}/design/events", "design", "Event definitions with their form settings", None, 200),
    ("post", "/api/v1/studies/{oid}/design/events", "design", "Define an event in the draft", Some("EventInput"), 201),
    (
        "put",
        "/api/v1/studies/{oid}/design/events/{event}",
        "design",
        "Replace an event definition in the draft",
        Some("EventInput"),
        200,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/design/diff",
        "design",
        "The draft compared with the newest published version, with the changes that may not be published",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/design/publish",
        "design",
        "Publish the draft as the next immutable version, in Test",
        Some("Publish"),
        201,
    ),
    ("get", "/api/v1/studies/{oid}/design/versions", "design", "Published versions and their environment", None, 200),
    (
        "post",
        "/api/v1/studies/{oid}/design/versions/{number}/promote",
        "design",
        "Promote a version proven in Test to Production",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/participants",
        "participants",
        "Participants the caller may see (?site=OID, ?after=ID, ?limit=)",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/matrix",
        "participants",
        "Participant matrix: participants × events with statuses and form counts; ?site=OID, \
         ?status=available,signed,removed,all, ?q=ID-prefix, ?event=SE_OID, ?event_status=…|not_scheduled, \
         ?sort=label|-label|enrolled|-enrolled|site, ?page_size=1–500 (50), ?after=<next cursor>; \
         returns {events, rows, next, total}",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/participants",
        "participants",
        "Enrol a participant at a site, following the study's parameters (automatic IDs from the template)",
        Some("Enrol"),
        201,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/participants/{participant}",
        "participants",
        "A participant's casebook: details, events, forms and values (participant by ID or OID)",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/participants/{participant}/events",
        "participants",
        "Schedule an event (the next occurrence of a repeating one)",
        Some("Schedule"),
        201,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/participants/{participant}/review",
        "review",
        "A participant's review state: event statuses (and what a locked event unlocks to), forms with their SDV requirement and state, signatures",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/participants/{participant}/events/{event}/{repeat}/status",
        "review",
        "Move an event's status by hand: stopped, skipped, data_entry_started, completed (data-entry roles); locked, unlocked (data managers, study directors)",
        Some("EventStatusChange"),
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/participants/{participant}/events/{event}/{repeat}/sign",
        "review",
        "Sign a completed event (investigators; re-enter username and password, state the meaning); later data changes break the signature",
        Some("Signature"),
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/participants/{participant}/sign",
        "review",
        "Sign a participant's casebook (every event completed, stopped or skipped); later data changes break the signature",
        Some("Signature"),
        200,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/participants/{participant}/signatures",
        "review",
        "Every signature of a participant: signer, time, meaning, data hash, in force or broken (when and why)",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/participants/{participant}/events/{event}/{repeat}/forms/{form}/sdv",
        "review",
        "Verify a complete form (or, with items, some of its values) against source documents, or withdraw the verification (monitors, data managers, study directors)",
        Some("Sdv"),
        200,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/notes",
        "notes",
        "Discrepancy note threads of a study, filtered by site, participant, status (or open), type, assignee (or me), event, form, item and age in days; with counts by status",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/notes",
        "notes",
        "Open a thread on an item value, or a field of a form, an event or a participant (which types each role may open follows OpenClinica)",
        Some("OpenNote"),
        201,
    ),
    ("get", "/api/v1/studies/{oid}/notes.csv", "notes", "The filtered threads as CSV", None, 200),
    ("get", "/api/v1/studies/{oid}/notes/{id}", "notes", "One thread with every note in it", None, 200),
    (
        "post",
        "/api/v1/studies/{oid}/notes/{id}/replies",
        "notes",
        "Reply to a thread, moving it to a status and an assignee (by default the role's usual next step, and back to the opener)",
        Some("NoteReply"),
        200,
    ),
    ("get", "/api/v1/outbox", "notes", "Queued and sent notification e-mails (administrators)", None, 200),
    (
        "get",
        "/api/v1/studies/{oid}/clinical-data",
        "clinical data",
        "The study's clinical data (or a site's, by its OID) as CDISC ODM, streamed: ?format=odm13|odm13-oc|odm2, participant, event, form, changed_since (RFC 3339), full=true (design + AdminData + data), audit_records=true, signatures=true, notes=true and audit_logs=true (odm13-oc)",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/clinical-data/import",
        "clinical data",
        "Check an ODM ClinicalData file (the body) against the study: ?dry_run=true (required for now), every problem with its line, participant, event, form, item and value",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/clinical-data/import-jobs",
        "clinical data",
        "Import an ODM ClinicalData file (the body, or the multipart part `file`; up to http.import_limit_bytes, spooled to disk) as a background job: ?mode=all-or-nothing|per-record|dry-run, ?file_name=; answers 202 with the job",
        None,
        202,
    ),
    ("get", "/api/v1/studies/{oid}/jobs", "clinical data", "The study's import jobs, newest first", None, 200),
    (
        "get",
        "/api/v1/jobs/{id}",
        "clinical data",
        "A job: status (in_progress, completed, failed, cancelled), mode, progress while it runs (phase, bytes read, percent, forms written) and, once finished, the import's report",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/jobs/{id}/cancel",
        "clinical data",
        "Cancel a running job (all or nothing: nothing is written; per record: the forms written so far stay); answers 202 with the job",
        None,
        202,
    ),
    (
        "get",
        "/api/v1/jobs/{id}/log.csv",
        "clinical data",
        "A finished job's log (OpenClinica 4's import log columns)",
        None,
        200,
    ),
    (
        "delete",
        "/api/v1/jobs/{id}",
        "clinical data",
        "Delete a finished job's record (its starter only); the imported data stay",
        None,
        204,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/extracts",
        "extracts",
        "Queue an extract: {format (csv-wide, csv-long, tsv, xlsx, spss, sas, stata, r, dataset-json, odm13, odm13-oc or a module), dataset?, site?, include_phi?, changed_since?}; runs in the background (extract.concurrent at once); answers 202 with the run",
        None,
        202,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/extracts",
        "extracts",
        "The study's extract runs, newest first (site users: theirs): the archive",
        None,
        200,
    ),
    (
        "get",
        "/api/v1/extracts/{id}",
        "extracts",
        "A run: status (queued, running, completed, failed, cancelled), participants written of total, files with size and SHA-256, design version, data cut-off",
        None,
        200,
    ),
    ("post", "/api/v1/extracts/{id}/cancel", "extracts", "Cancel a queued run", None, 200),
    (
        "post",
        "/api/v1/studies/{oid}/extract-schedules",
        "extracts",
        "Schedule an extract {format, site?, dataset?, include_phi?, every: daily|weekly, at: HH:MM UTC, weekday?, changed_only?}",
        None,
        201,
    ),
    ("get", "/api/v1/studies/{oid}/extract-schedules", "extracts", "The study's scheduled extracts", None, 200),
    ("delete", "/api/v1/extract-schedules/{id}", "extracts", "Stop a scheduled extract (its runs stay)", None, 204),
    (
        "get",
        "/api/v1/studies/{oid}/datasets",
        "extracts",
        "The study's dataset definitions (newest versions)",
        None,
        200,
    ),
    ("get", "/api/v1/studies/{oid}/datasets/{name}", "extracts", "A dataset definition (newest version)", None, 200),
    (
        "put",
        "/api/v1/studies/{oid}/datasets/{name}",
        "extracts",
        "Save a dataset definition {events?, items?, form_status?: complete|not_complete|both, include_phi?, description?}: a new version; every wrong event or item named",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/extracts/{id}/retry",
        "extracts",
        "Run an extract again with the same settings (a new run)",
        None,
        202,
    ),
    ("get", "/api/v1/extracts/{id}/files/{name}", "extracts", "Download one of a run's files", None, 200),
    (
        "post",
        "/api/v1/studies/{oid}/rules",
        "rules",
        "Import an OpenClinica rules file (the body; ?file_name=, ?preview=true to check and show it without saving), checked against the design in Production",
        None,
        201,
    ),
    (
        "get",
        "/api/v1/studies/{oid}/rules",
        "rules",
        "The current rules on their targets, with version, actions, phases and whether enabled",
        None,
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/rules/{rule}/enabled",
        "rules",
        "Enable or disable a rule (on every target, or one)",
        Some("RuleEnabled"),
        200,
    ),
    (
        "post",
        "/api/v1/studies/{oid}/rules/run",
        "rules",
        "Run the rules over the study's data (batch), or report what they would do (dry_run)",
        Some("RulesRun"),
        200,
    ),
];

fn schemas() -> Value {
    let s = |props: &[(&str, &str)], required: &[&str]| {
        let mut p = Map::new();
        for (name, ty) in props {
            p.insert((*name).to_owned(), json!({"type": ty}));
        }
        json!({"type": "object", "properties": p, "required": required})
    };
    let details: &[(&str, &str)] = &[
        ("protocol_id", "string"),
        ("secondary_id", "string"),
        ("name", "string"),
        ("title", "string"),
        ("summary", "string"),
        ("sponsor", "string"),
        ("collaborators", "string"),
        ("principal_investigator", "string"),
        ("phase", "string"),
        ("protocol_type", "string"),
        ("expected_enrollment", "integer"),
        ("start_date", "string"),
        ("end_date", "string"),
        ("facility_name", "string"),
        ("facility_city", "string"),
        ("facility_country", "string"),
        ("contact_email", "string"),
        ("parameters", "object"),
    ];
    json!({
        "Login": s(&[("username", "string"), ("password", "string")], &["username", "password"]),
        "PasswordChange": s(&[("current_password", "string"), ("new_password", "string")], &["current_password", "new_password"]),
        "ApiKeyCreate": s(&[("name", "string")], &["name"]),
        "UserCreate": s(&[("username", "string"), ("first_name", "string"), ("last_name", "string"), ("email", "string"),
            ("institution", "string"), ("user_type", "string"), ("password", "string")], &["username", "first_name", "last_name", "email"]),
        "UserPatch": s(&[("first_name", "string"), ("last_name", "string"), ("email", "string"), ("institution", "string"), ("user_type", "string")], &[]),
        "StudyCreate": s(details, &["protocol_id", "name"]),
        "SiteCreate": s(details, &["protocol_id", "name"]),
        "StudyUpdate": s(&[("details", "object"), ("parameters", "object"), ("reason", "string")], &[]),
        "StatusChange": s(&[("status", "string"), ("reason", "string")], &["status"]),
        "RoleAssign": s(&[("username", "string"), ("role", "string"), ("site_oid", "string")], &["username", "role"]),
        "EventInput": s(&[("name", "string"), ("type", "string"), ("repeating", "boolean"), ("category", "string"), ("description", "string"), ("forms", "array")], &["name"]),
        "Publish": s(&[("notes", "string")], &[]),
        "Enrol": s(&[("site", "string"), ("label", "string"), ("secondary_label", "string"), ("person_id", "string"), ("sex", "string"), ("date_of_birth", "string"), ("enrolled_on", "string"), ("group", "string")], &["site", "enrolled_on"]),
        "Schedule": s(&[("event", "string"), ("start", "string"), ("end", "string"), ("location", "string")], &["event"]),
        "SaveForm": s(&[("expected_version", "integer"), ("form_version", "string"), ("values", "array"), ("remove_rows", "array"), ("notes", "array")], &[]),
        "CompleteForm": s(&[("expected_version", "integer"), ("password", "string")], &["expected_version"]),
        "Reason": s(&[("reason", "string")], &[]),
        "Reassign": s(&[("site", "string"), ("reason", "string")], &["site"]),
        "DoubleEntry": s(&[("values", "array")], &["values"]),
        "DoubleEntryComplete": s(&[("expected_version", "integer"), ("resolutions", "array")], &["expected_version"]),
        "EventStatusChange": s(&[("status", "string"), ("reason", "string")], &["status"]),
        "Signature": s(&[("username", "string"), ("password", "string"), ("meaning", "string")], &["username", "password", "meaning"]),
        "Sdv": s(&[("verified", "boolean"), ("items", "array")], &["verified"]),
        "OpenNote": s(&[("participant", "string"), ("event", "string"), ("repeat", "integer"), ("form", "string"), ("item", "string"), ("row", "integer"), ("column", "string"), ("type", "string"), ("description", "string"), ("detailed_note", "string"), ("assigned_to", "string")], &["participant", "type", "description"]),
        "NoteReply": s(&[("description", "string"), ("detailed_note", "string"), ("status", "string"), ("assigned_to", "string")], &["description"]),
        "RuleEnabled": s(&[("enabled", "boolean"), ("target", "string")], &["enabled"]),
        "RulesRun": s(&[("dry_run", "boolean"), ("rule", "string"), ("participant", "string")], &[]),
        "Error": s(&[("code", "string"), ("message", "string"), ("details", "object"), ("request_id", "string")], &["code", "message"]),
    })
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, tag, summary, body, status) in ENDPOINTS {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "tags": [tag],
            "summary": summary,
            "parameters": params,
            "responses": {
                status.to_string(): {"description": "success"},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(b) = body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
        }
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Casebook API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Native REST API of Casebook. Authenticate with `Authorization: Bearer <api key>` \
                (or OpenClinica-style Basic with the key as username), or with a session from /api/v1/auth/login \
                plus the X-CSRF-Token header on writes. Errors are JSON {code, message, details, request_id}.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basicApiKey": {"type": "http", "scheme": "basic", "description": "API key as username, any password"},
                "session": {"type": "apiKey", "in": "cookie", "name": "casebook_session"},
            },
        },
        "security": [{"bearer": []}, {"basicApiKey": []}, {"session": []}],
    })
}

pub async fn openapi() -> Json<Value> {
    Json(document())
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/docs", get(docs_page))
}

async fn docs_page() -> Html<String> {
    let mut rows = String::new();
    let mut last_tag = "";
    for (method, path, tag, summary, body, status) in ENDPOINTS {
        if *tag != last_tag {
            rows.push_str(&format!("<h2>{}</h2>", crate::html::escape(tag)));
            last_tag = tag;
        }
        let body = body.map(|b| format!(" <span class=body>body: {b}</span>")).unwrap_or_default();
        rows.push_str(&format!(
            "<div class=ep><span class='m {method}'>{}</span> <code>{}</code> → {status}{body}<p>{}</p></div>",
            method.to_uppercase(),
            crate::html::escape(path),
            crate::html::escape(summary)
        ));
    }
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>Casebook API</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d2733}}\
         .ep{{border:1px solid #d6dde5;border-radius:6px;padding:.5rem .8rem;margin:.4rem 0}}.ep p{{margin:.3rem 0 0;color:#445}}\
         .m{{display:inline-block;min-width:4.5rem;font-weight:600}}.get{{color:#1b6e3a}}.post{{color:#1c4f9c}}.patch{{color:#8a5a00}}.delete{{color:#a02020}}\
         .body{{color:#667;font-size:.9em}}</style></head><body><h1>Casebook API v1</h1>\
         <p>Machine-readable: <a href=/api/v1/openapi.json>/api/v1/openapi.json</a> (OpenAPI 3.1). Authenticate with \
         <code>Authorization: Bearer &lt;api key&gt;</code>. Errors are JSON <code>{{code, message, details, request_id}}</code>.</p>{rows}</body></html>"
    ))
}
