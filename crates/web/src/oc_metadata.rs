//! OpenClinica 3 compatible study metadata (reference `openclinica-api.md` §3.1):
//! `GET {ctx}/rest/metadata/{xml|json}/view/{studyOID}[/{eventOID}/{formVersionOID}]` (the event
//! segment is ignored; `*` selects every form version) and
//! `GET {ctx}/rest/metadata/html/print/{studyOID}/{eventOID}/{formVersionOID}` (a blank,
//! printable form). The study may be a site OID. The design served is the one in Production, or
//! in Test before anything was promoted.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use casebook_domain::design::{FormVersion, ItemDef, StudyDesign, Widget};

use crate::AppState;
use crate::api::{ApiResult, WithRid};
use crate::auth::Auth;
use crate::html::{escape, page};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/rest/metadata/{format}/view/{study}", get(view_study))
        .route("/rest/metadata/{format}/view/{study}/{event}/{form}", get(view_form))
        .route("/rest/metadata/html/print/{study}/{event}/{form}", get(print_form))
}

async fn view_study(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((format, study)): Path<(String, String)>,
) -> ApiResult<Response> {
    view(&s, &headers, &p, &format, &study, None).await
}

async fn view_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((format, study, _event, form)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    view(&s, &headers, &p, &format, &study, Some(&form)).await
}

async fn view(
    s: &AppState,
    headers: &HeaderMap,
    p: &casebook_app::auth::Principal,
    format: &str,
    study: &str,
    form: Option<&str>,
) -> ApiResult<Response> {
    if format != "xml" && format != "json" {
        return Err(casebook_app::AppError::NotFound("metadata format (use xml or json)")).rid(headers);
    }
    if format == "xml" {
        let xml = s.app.openclinica_metadata(p, study, form).await.rid(headers)?;
        return Ok(([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml).into_response());
    }
    let json = s.app.openclinica_metadata_json(p, study, form).await.rid(headers)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response())
}

async fn print_form(
    State(s): State<AppState>,
    headers: HeaderMap,
    Auth(p): Auth,
    Path((study, _event, form)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (row, design, label) = s.app.openclinica_design(&p, &study, Some(&form)).await.rid(&headers)?;
    let title = format!("{} — blank forms (design {label})", row.name);
    Ok(page(&title, &print_html(&design, &title)).into_response())
}

/// A blank, printable rendering of every form version of a design.
fn print_html(design: &StudyDesign, title: &str) -> String {
    let mut out = format!(
        "<style>@media print{{header{{display:none}}main{{box-shadow:none}}}}.box{{display:inline-block;min-width:12rem;border-bottom:1px solid #555;height:1.2rem}}\
         .opt{{margin-right:1rem;white-space:nowrap}}.q{{margin:.7rem 0}}.n{{color:#555;margin-right:.4rem}}.hint{{color:#666;font-size:.9em}}\
         section{{page-break-inside:avoid}}</style><h1>{}</h1>",
        escape(title)
    );
    for form in &design.forms {
        for v in &form.versions {
            out.push_str(&format!(
                "<h2>{} <small>({}, version {})</small></h2>",
                escape(&form.name),
                escape(v.oid.as_str()),
                escape(&v.label)
            ));
            for section in &v.sections {
                out.push_str(&format!("<section><h3>{}</h3>", escape(&section.title.text)));
                if let Some(i) = &section.instructions {
                    out.push_str(&format!("<p class=hint>{}</p>", escape(i)));
                }
                let items: Vec<&ItemDef> = v.items.iter().filter(|i| i.section == section.label).collect();
                let mut k = 0;
                while k < items.len() {
                    let group = v.group(items[k].group_oid.as_str());
                    if let Some(g) = group.filter(|g| g.is_repeating()) {
                        let row_items: Vec<&ItemDef> =
                            items[k..].iter().take_while(|i| i.group_oid == g.oid).copied().collect();
                        k += row_items.len();
                        out.push_str(&grid(v, g, &row_items));
                    } else {
                        out.push_str(&question(v, items[k]));
                        k += 1;
                    }
                }
                out.push_str("</section>");
            }
        }
    }
    out
}

fn answer(v: &FormVersion, item: &ItemDef) -> String {
    if let Some(cl) = item.code_list.as_ref().and_then(|c| v.code_list(c.as_str())) {
        let mark = if item.widget.is_multi() { "☐" } else { "○" };
        return cl
            .items
            .iter()
            .map(|o| {
                format!("<span class=opt>{mark} {} <small>({})</small></span>", escape(&o.label.text), escape(&o.value))
            })
            .collect();
    }
    match item.widget {
        Widget::Note => String::new(),
        Widget::Calculation | Widget::GroupCalculation => "<em>calculated</em>".to_owned(),
        _ => {
            let shape = match item.data_type.code() {
                "DATE" => " (dd-MMM-yyyy)",
                "PDATE" => " (dd-MMM-yyyy, MMM-yyyy or yyyy)",
                "DATETIME" => " (dd-MMM-yyyy HH:mm)",
                "TIME" => " (HH:mm)",
                _ => "",
            };
            let units = item.units.as_deref().map(|u| format!(" {}", escape(u))).unwrap_or_default();
            format!("<span class=box></span>{units}<small>{shape}</small>")
        }
    }
}

fn question(v: &FormVersion, item: &ItemDef) -> String {
    let number =
        item.question_number.as_deref().map(|n| format!("<span class=n>{}</span>", escape(n))).unwrap_or_default();
    let required = if matches!(item.required, casebook_domain::design::Required::Yes) { " *" } else { "" };
    let hint = if item.hint.text.is_empty() {
        String::new()
    } else {
        format!("<div class=hint>{}</div>", escape(&item.hint.text))
    };
    let header = item.header.as_deref().map(|h| format!("<h4>{}</h4>", escape(h))).unwrap_or_default();
    format!(
        "{header}<div class=q>{number}<strong>{}</strong>{required} <small>[{}]</small><div>{}</div>{hint}</div>",
        escape(&item.label.text),
        escape(&item.name),
        answer(v, item)
    )
}

fn grid(v: &FormVersion, g: &casebook_domain::design::ItemGroup, items: &[&ItemDef]) -> String {
    let rows = g.repeat.as_ref().map_or(3, |r| r.initial_rows.max(3));
    let mut out =
        format!("<h4>{}</h4><table><tr>", escape(if g.header.text.is_empty() { &g.name } else { &g.header.text }));
    for i in items {
        out.push_str(&format!("<th>{}</th>", escape(&i.label.text)));
    }
    out.push_str("</tr>");
    for _ in 0..rows {
        out.push_str("<tr>");
        for i in items {
            let cell = if i.code_list.is_some() { answer(v, i) } else { "&nbsp;".to_owned() };
            out.push_str(&format!("<td style='height:2rem'>{cell}</td>"));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}
