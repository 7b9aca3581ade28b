//! Building a study's design: uploading forms, defining events, diffing and publishing.
//!
//! A study has one editable draft. Uploads and event edits change the draft; publishing freezes
//! it into a numbered, hashed, immutable version in the Test environment; a version proven in
//! Test is promoted to Production. Before anything is published the diff against the newest
//! version is computed, and changes that would orphan or reinterpret collected data are refused.
//! Only data managers and study directors (and administrators) build designs.

use casebook_domain::audit::AuditEntry;
use casebook_domain::design::diff::{DesignDiff, diff};
use casebook_domain::design::{
    EventDef, EventForm, EventType, HiddenValues, NULL_FLAVOURS, SdvRequirement, StudyDesign,
};
use casebook_domain::oid::{self, Oid, OidKind};
use casebook_domain::role::Permission;
use casebook_formats::diagnostic::{Diagnostic, Location};
use casebook_formats::workbook::Workbook;
use casebook_formats::xlsform;
use casebook_store::designs::DesignVersionRow;
use casebook_store::studies::StudyRow;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::App;
use crate::auth::Principal;
use crate::error::{AppError, anyhow_like};
use casebook_domain::FieldError;

/// Which design to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Draft,
    Test,
    Production,
    Number(i32),
}

impl Which {
    /// Parses `draft`, `test`, `production` or a version number.
    ///
    /// # Errors
    /// For anything else.
    pub fn parse(text: &str) -> Result<Self, AppError> {
        match text.to_ascii_lowercase().as_str() {
            "draft" => Ok(Self::Draft),
            "test" => Ok(Self::Test),
            "production" | "prod" => Ok(Self::Production),
            n => n
                .parse::<i32>()
                .ok()
                .filter(|n| *n > 0)
                .map(Self::Number)
                .ok_or_else(|| AppError::invalid("version", "use draft, test, production or a version number")),
        }
    }
}

/// A published version, without its document.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    pub number: i32,
    pub hash: String,
    pub notes: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub production_at: Option<time::OffsetDateTime>,
    /// `test`, or `production` once promoted.
    pub environment: &'static str,
}

impl From<&DesignVersionRow> for VersionView {
    fn from(r: &DesignVersionRow) -> Self {
        Self {
            number: r.number,
            hash: r.hash.clone(),
            notes: r.notes.clone(),
            published_at: r.published_at,
            production_at: r.production_at,
            environment: if r.production_at.is_some() { "production" } else { "test" },
        }
    }
}

/// The result of an accepted upload.
#[derive(Debug, Clone, Serialize)]
pub struct UploadOutcome {
    pub form_oid: String,
    pub form_name: String,
    pub version_oid: String,
    pub version_label: String,
    /// True when the upload replaced an unpublished draft version with the same label.
    pub replaced: bool,
    pub sections: usize,
    pub item_groups: usize,
    pub items: usize,
    pub code_lists: usize,
    /// Warnings (errors refuse the upload).
    pub diagnostics: Vec<Diagnostic>,
    /// The draft compared with the newest published version.
    pub diff: DesignDiff,
}

/// The result of an accepted ODM metadata import.
#[derive(Debug, Clone, Serialize)]
pub struct OdmImportOutcome {
    /// The ODM study the metadata came from.
    pub source_study_oid: String,
    pub metadata_version_oid: String,
    /// Form versions added or replaced in the draft.
    pub form_versions: Vec<String>,
    /// Event definitions added or replaced in the draft.
    pub events: Vec<String>,
    /// Warnings (errors refuse the file).
    pub diagnostics: Vec<Diagnostic>,
    pub diff: DesignDiff,
}

/// An event definition as the API receives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    /// `scheduled` (visit-based), `unscheduled` or `common`.
    #[serde(rename = "type", default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub repeating: bool,
    #[serde(default)]
    pub forms: Vec<EventFormInput>,
}

/// A form's settings in an event, as the API receives them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFormInput {
    /// The form OID.
    pub form: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub double_data_entry: bool,
    /// `full`, `partial`, `not_required` (default) or `not_applicable` (or OpenClinica's 1–4).
    #[serde(default)]
    pub sdv: Option<String>,
    /// Item-level SDV (with `sdv: partial`): the items, by OID or name, a monitor verifies one by one.
    #[serde(default)]
    pub sdv_items: Vec<String>,
    /// `clear` (default): values of items hidden by skip logic are cleared, audited; `refuse`:
    /// such a save is refused until the value is cleared in it.
    #[serde(default)]
    pub hidden_values: Option<String>,
    #[serde(default)]
    pub electronic_signature: bool,
    #[serde(default)]
    pub hidden_from_sites: bool,
    #[serde(default)]
    pub default_version: Option<String>,
    #[serde(default)]
    pub allowed_versions: Vec<String>,
    #[serde(default)]
    pub null_flavours: Vec<String>,
    /// Per-site settings, by site OID: `{ "S_SITEA": { "allowed_versions": [...], "default_version": "...", "hidden": false } }`.
    #[serde(default)]
    pub site_settings: std::collections::BTreeMap<String, SiteFormInput>,
}

/// A site's settings for a form in an event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFormInput {
    #[serde(default)]
    pub default_version: Option<String>,
    #[serde(default)]
    pub allowed_versions: Vec<String>,
    #[serde(default)]
    pub hidden: bool,
}

/// The outcome of publishing.
#[derive(Debug, Clone, Serialize)]
pub struct PublishOutcome {
    pub version: VersionView,
    pub diff: DesignDiff,
}

/// The draft compared with the newest published version.
#[derive(Debug, Clone, Serialize)]
pub struct DiffView {
    /// The version compared against (`None` before the first publish).
    pub against: Option<i32>,
    pub diff: DesignDiff,
    /// Form versions that hold data and are touched by a change.
    pub impact: Vec<Impact>,
    /// Whether the draft may be published as it is.
    pub publishable: bool,
}

/// A form version with collected data that a change touches.
#[derive(Debug, Clone, Serialize)]
pub struct Impact {
    pub form_version_oid: String,
    /// How many forms (participant × event) hold data in this version.
    pub forms_with_data: i64,
    /// The changes that touch it (`changed item I_X`, `removed form version …`).
    pub changes: Vec<String>,
}

/// The form versions with data that the changes of `d` touch.
fn impact_of(d: &DesignDiff, published: &StudyDesign, usage: &std::collections::HashMap<String, i64>) -> Vec<Impact> {
    use casebook_domain::design::diff::{ChangeKind, ObjectKind};
    let mut by_version: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for c in &d.changes {
        let kind = match c.kind {
            ChangeKind::Added => continue,
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
        };
        let versions: Vec<String> = match c.object {
            ObjectKind::FormVersion => vec![c.oid.clone()],
            ObjectKind::Form => published
                .form(&c.oid)
                .map(|f| f.versions.iter().map(|v| v.oid.to_string()).collect())
                .unwrap_or_default(),
            ObjectKind::Item | ObjectKind::ItemGroup => published
                .form(&c.within)
                .map(|f| {
                    f.versions
                        .iter()
                        .filter(|v| {
                            v.items.iter().any(|i| i.oid.as_str() == c.oid)
                                || v.groups.iter().any(|g| g.oid.as_str() == c.oid)
                        })
                        .map(|v| v.oid.to_string())
                        .collect()
                })
                .unwrap_or_default(),
            ObjectKind::Event => published
                .event(&c.oid)
                .map(|e| {
                    e.forms
                        .iter()
                        .filter_map(|ef| published.form(ef.form_oid.as_str()))
                        .flat_map(|f| f.versions.iter().map(|v| v.oid.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let object = match c.object {
            ObjectKind::Event => "event",
            ObjectKind::Form => "form",
            ObjectKind::FormVersion => "form version",
            ObjectKind::ItemGroup => "item group",
            ObjectKind::Item => "item",
        };
        for v in versions {
            by_version.entry(v).or_default().push(format!("{kind} {object} {}", c.oid));
        }
    }
    by_version
        .into_iter()
        .filter_map(|(v, changes)| {
            let n = usage.get(&v).copied().unwrap_or(0);
            (n > 0).then_some(Impact { form_version_oid: v, forms_with_data: n, changes })
        })
        .collect()
}

/// A form and its versions, without their contents.
#[derive(Debug, Clone, Serialize)]
pub struct FormSummary {
    pub oid: String,
    pub name: String,
    pub versions: Vec<FormVersionSummary>,
}

/// A form version's identity and size.
#[derive(Debug, Clone, Serialize)]
pub struct FormVersionSummary {
    pub oid: String,
    pub label: String,
    pub source: casebook_domain::design::FormSource,
    pub sections: usize,
    pub item_groups: usize,
    pub items: usize,
}

/// An item as listed across a design: where it is and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct ItemSummary {
    pub form_oid: String,
    pub oid: String,
    pub name: String,
    pub data_type: casebook_domain::design::DataType,
    pub group_oid: String,
    pub repeating: bool,
    pub label: String,
    /// The versions of the form that contain the item.
    pub versions: Vec<String>,
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError::Internal(anyhow_like::Internal(Box::new(e)))
}

fn parse_design(doc: &str) -> Result<StudyDesign, AppError> {
    serde_json::from_str(doc).map_err(internal)
}

fn rejected(message: String, diagnostics: &[Diagnostic]) -> AppError {
    AppError::Rejected { code: "design_rejected", message, details: serde_json::json!({ "diagnostics": diagnostics }) }
}

impl App {
    async fn design_study(&self, who: &Principal, study_oid: &str, build: bool) -> Result<StudyRow, AppError> {
        let (study, access) = self.study_with_access(who, study_oid).await?;
        if build {
            if !access.can_study(Permission::BuildStudy) {
                return Err(AppError::Forbidden("build this study's design"));
            }
        } else if !access.can_study(Permission::ViewStudy) && !access.any() {
            return Err(AppError::NotFound("study"));
        }
        Ok(study)
    }

    /// The draft, or else the newest published design, or else an empty design.
    async fn current_draft(&self, study_id: i64) -> Result<StudyDesign, AppError> {
        if let Some(d) = self.store().design_draft(study_id).await? {
            return parse_design(&d.document);
        }
        if let Some(v) = self.store().design_test_version(study_id).await? {
            return parse_design(&v.document);
        }
        Ok(StudyDesign::default())
    }

    async fn published_design(&self, study_id: i64) -> Result<(Option<i32>, StudyDesign), AppError> {
        match self.store().design_test_version(study_id).await? {
            Some(v) => Ok((Some(v.number), parse_design(&v.document)?)),
            None => Ok((None, StudyDesign::default())),
        }
    }

    /// Reads a design: the draft, the version in Test or Production, or a version by number.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the study or the version does not exist.
    pub async fn design(&self, who: &Principal, study_oid: &str, which: Which) -> Result<StudyDesign, AppError> {
        let study = self.design_study(who, study_oid, false).await?;
        let doc = match which {
            Which::Draft => return self.current_draft(study.id).await,
            Which::Test => self.store().design_test_version(study.id).await?,
            Which::Production => self.store().design_production_version(study.id).await?,
            Which::Number(n) => self.store().design_version(study.id, n).await?,
        };
        parse_design(&doc.ok_or(AppError::NotFound("design version"))?.document)
    }

    /// The forms of a design with their versions.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the study or the version does not exist.
    pub async fn design_forms(
        &self,
        who: &Principal,
        study_oid: &str,
        which: Which,
    ) -> Result<Vec<FormSummary>, AppError> {
        let design = self.design(who, study_oid, which).await?;
        Ok(design
            .forms
            .iter()
            .map(|f| FormSummary {
                oid: f.oid.to_string(),
                name: f.name.clone(),
                versions: f
                    .versions
                    .iter()
                    .map(|v| FormVersionSummary {
                        oid: v.oid.to_string(),
                        label: v.label.clone(),
                        source: v.source,
                        sections: v.sections.len(),
                        item_groups: v.groups.len(),
                        items: v.items.len(),
                    })
                    .collect(),
            })
            .collect())
    }

    /// One form version, whole.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the study, the design version or the form version does not exist.
    pub async fn design_form_version(
        &self,
        who: &Principal,
        study_oid: &str,
        which: Which,
        version_oid: &str,
    ) -> Result<casebook_domain::design::FormVersion, AppError> {
        let design = self.design(who, study_oid, which).await?;
        design.form_version(version_oid).map(|(_, v)| v.clone()).ok_or(AppError::NotFound("form version"))
    }

    /// Every item of a design (optionally of one form), once per item OID.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the study, the version or the form does not exist.
    pub async fn design_items(
        &self,
        who: &Principal,
        study_oid: &str,
        which: Which,
        form_oid: Option<&str>,
    ) -> Result<Vec<ItemSummary>, AppError> {
        let design = self.design(who, study_oid, which).await?;
        if let Some(f) = form_oid
            && design.form(f).is_none()
        {
            return Err(AppError::NotFound("form"));
        }
        let mut out: Vec<ItemSummary> = Vec::new();
        for f in design.forms.iter().filter(|f| form_oid.is_none_or(|o| f.oid.as_str() == o)) {
            for v in &f.versions {
                for i in &v.items {
                    if let Some(existing) =
                        out.iter_mut().find(|x| x.oid == i.oid.as_str() && x.form_oid == f.oid.as_str())
                    {
                        existing.versions.push(v.oid.to_string());
                        continue;
                    }
                    out.push(ItemSummary {
                        form_oid: f.oid.to_string(),
                        oid: i.oid.to_string(),
                        name: i.name.clone(),
                        data_type: i.data_type,
                        group_oid: i.group_oid.to_string(),
                        repeating: v
                            .group(i.group_oid.as_str())
                            .is_some_and(casebook_domain::design::ItemGroup::is_repeating),
                        label: i.label.text.clone(),
                        versions: vec![v.oid.to_string()],
                    });
                }
            }
        }
        Ok(out)
    }

    /// The design as CDISC ODM metadata (`odm13`, `odm13-oc` with OpenClinica extensions, or
    /// `odm2`), written to `out`.
    ///
    /// # Errors
    /// [`AppError::Validation`] for an unknown format; [`AppError::NotFound`] for an unknown
    /// study or version.
    pub async fn export_design(
        &self,
        who: &Principal,
        study_oid: &str,
        which: Which,
        format: &str,
    ) -> Result<Vec<u8>, AppError> {
        use casebook_formats::odm::write::OdmFlavour;
        let flavour = match format {
            "odm13" | "odm132" => OdmFlavour::Odm132,
            "odm13-oc" | "odm132-oc" | "oc" => OdmFlavour::Odm132OpenClinica,
            "odm2" | "odm20" => OdmFlavour::Odm20,
            other => {
                return Err(AppError::invalid("format", format!("'{other}' is not odm13, odm13-oc or odm2")));
            }
        };
        let study = self.design_study(who, study_oid, false).await?;
        let (design, version_label) = match which {
            Which::Draft => (self.current_draft(study.id).await?, "draft".to_owned()),
            _ => {
                let row = match which {
                    Which::Test => self.store().design_test_version(study.id).await?,
                    Which::Production => self.store().design_production_version(study.id).await?,
                    Which::Number(n) => self.store().design_version(study.id, n).await?,
                    Which::Draft => None,
                }
                .ok_or(AppError::NotFound("design version"))?;
                (parse_design(&row.document)?, format!("v{}", row.number))
            }
        };
        let rules = self.rule_set(study.id).await?;
        write_design(&study, &design, &version_label, flavour, self.store().clock().now(), Some(&rules))
    }

    /// OpenClinica 3's `/rest/metadata/…/view/{study}/{event}/{formVersion}`: the design in
    /// Production (else Test) as ODM 1.3.2 with OpenClinica extensions, for a study or one of its
    /// sites, whole or restricted to one form version (`*` = all).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown study, site or form version, or a study with no
    /// published design.
    pub async fn openclinica_metadata(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        form_version: Option<&str>,
    ) -> Result<Vec<u8>, AppError> {
        let (study, design, label) = self.openclinica_design(who, study_or_site_oid, form_version).await?;
        let flavour = casebook_formats::odm::write::OdmFlavour::Odm132OpenClinica;
        // A site's or one form version's metadata carries no rules (they are the study's).
        let rules = if form_version.is_none_or(|f| f == "*") { Some(self.rule_set(study.id).await?) } else { None };
        write_design(&study, &design, &label, flavour, self.store().clock().now(), rules.as_ref())
    }

    /// [`Self::openclinica_metadata`] as OpenClinica's REST API renders it in JSON.
    ///
    /// # Errors
    /// As [`Self::openclinica_metadata`].
    pub async fn openclinica_metadata_json(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        form_version: Option<&str>,
    ) -> Result<serde_json::Value, AppError> {
        let xml = self.openclinica_metadata(who, study_or_site_oid, form_version).await?;
        casebook_formats::odm::json::xml_to_json(&xml).map_err(|e| AppError::Internal(anyhow_like::Internal(e.into())))
    }

    /// The published design (Production, else Test) of a study or site, restricted to one form
    /// version when given (`*` = all), with its version label.
    ///
    /// # Errors
    /// As [`Self::openclinica_metadata`].
    pub async fn openclinica_design(
        &self,
        who: &Principal,
        study_or_site_oid: &str,
        form_version: Option<&str>,
    ) -> Result<(StudyRow, StudyDesign, String), AppError> {
        let (_, parent) = self.study_or_site(study_or_site_oid).await?;
        let study = self.design_study(who, &parent.oid, false).await?;
        let version = match self.store().design_production_version(study.id).await? {
            Some(v) => v,
            None => self.store().design_test_version(study.id).await?.ok_or(AppError::NotFound("published design"))?,
        };
        let mut design = parse_design(&version.document)?;
        if let Some(v) = form_version.filter(|v| *v != "*") {
            let form_oid =
                design.form_version(v).map(|(f, _)| f.oid.clone()).ok_or(AppError::NotFound("form version"))?;
            design.forms.retain(|f| f.oid == form_oid);
            for f in &mut design.forms {
                f.versions.retain(|x| x.oid.as_str() == v);
            }
            design.events.retain(|e| e.forms.iter().any(|x| x.form_oid == form_oid));
            for e in &mut design.events {
                e.forms.retain(|x| x.form_oid == form_oid);
            }
        }
        Ok((study, design, format!("v{}", version.number)))
    }

    async fn usage(&self, study_id: i64) -> Result<std::collections::HashMap<String, i64>, AppError> {
        Ok(self
            .store()
            .form_version_usage(study_id)
            .await?
            .into_iter()
            .map(|u| (u.form_version_oid, u.forms))
            .collect())
    }

    /// The published versions of a study, oldest first.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown study.
    pub async fn design_versions(&self, who: &Principal, study_oid: &str) -> Result<Vec<VersionView>, AppError> {
        let study = self.design_study(who, study_oid, false).await?;
        Ok(self.store().design_versions(study.id).await?.iter().map(VersionView::from).collect())
    }

    /// Uploads a form definition file (XLSForm or OpenClinica CRF template) into the draft.
    /// Every problem is reported at once; any error refuses the whole file and changes nothing.
    ///
    /// `event`, when given, adds the form to that event of the draft (by OID).
    ///
    /// # Errors
    /// [`AppError::Rejected`] with the diagnostics; [`AppError::Forbidden`] for users who may not
    /// build the design.
    pub async fn upload_form(
        &self,
        who: &Principal,
        study_oid: &str,
        file_name: &str,
        bytes: &[u8],
        event: Option<&str>,
    ) -> Result<UploadOutcome, AppError> {
        let study = self.design_study(who, study_oid, true).await?;
        let mut design = self.current_draft(study.id).await?;
        let (_, published) = self.published_design(study.id).await?;
        if let Some(e) = event
            && design.event(e).is_none()
        {
            return Err(AppError::invalid("event", format!("the draft has no event {e}; define it first")));
        }

        let lower = file_name.to_ascii_lowercase();
        let stem = std::path::Path::new(file_name).file_stem().and_then(|s| s.to_str()).unwrap_or("form").to_owned();
        let workbook = if lower.ends_with(".md") {
            Workbook::from_markdown(&String::from_utf8_lossy(bytes))
        } else if [".xlsx", ".xls", ".xlsm", ".ods"].iter().any(|x| lower.ends_with(x)) {
            Workbook::from_bytes(bytes).map_err(|e| {
                rejected(
                    format!("{file_name} cannot be read"),
                    &[Diagnostic {
                        severity: casebook_formats::diagnostic::Severity::Error,
                        location: Location::File,
                        message: e.to_string(),
                    }],
                )
            })?
        } else {
            return Err(AppError::invalid(
                "file",
                format!("{file_name}: upload an XLSForm or OpenClinica CRF template (.xlsx, .xls)"),
            ));
        };

        let is_crf = casebook_formats::occrf::is_crf_template(&workbook);
        let existing = if is_crf {
            casebook_formats::occrf::crf_name(&workbook).and_then(|n| design.form_by_name(&n).cloned())
        } else {
            let key = xlsform::form_key(&workbook).unwrap_or_else(|| stem.clone());
            design.form(&format!("F_{}", oid::normalise_key(&key, 12))).cloned()
        };
        let taken = design.oids();
        let ctx = xlsform::Context { existing: existing.as_ref(), taken: Some(&taken), file_stem: Some(&stem) };
        let (imported, mut diags) =
            if is_crf { casebook_formats::occrf::import(&workbook, ctx) } else { xlsform::import(&workbook, ctx) };
        let Some(imported) = imported.filter(|_| !diags.has_errors()) else {
            let n = diags.errors().count();
            return Err(rejected(format!("{file_name} was refused: {n} error(s); nothing was saved"), &diags.0));
        };

        // A version label may be replaced only while unpublished.
        let label = imported.version.label.clone();
        let mut replaced = false;
        if let Some(pf) = published.form(imported.form_oid.as_str())
            && pf.version(&label).is_some()
        {
            diags.error(
                Location::Sheet { sheet: "settings".into(), row: None, column: Some("version".into()) },
                format!(
                    "version '{label}' of form {} is published and cannot be replaced; give this upload a new version label",
                    pf.oid
                ),
            );
            return Err(rejected(format!("{file_name} was refused; nothing was saved"), &diags.0));
        }
        let form_oid = imported.form_oid.clone();
        match design.forms.iter_mut().find(|f| f.oid == form_oid) {
            Some(f) => {
                if let Some(pos) = f.versions.iter().position(|v| v.label == label) {
                    f.versions[pos] = imported.version.clone();
                    replaced = true;
                } else {
                    f.versions.push(imported.version.clone());
                }
                f.name.clone_from(&imported.form_name);
            }
            None => design.forms.push(casebook_domain::design::FormDef {
                oid: form_oid.clone(),
                name: imported.form_name.clone(),
                description: None,
                versions: vec![imported.version.clone()],
            }),
        }
        if let Some(e) = event
            && let Some(ev) = design.events.iter_mut().find(|x| x.oid.as_str() == e)
            && !ev.forms.iter().any(|f| f.form_oid == form_oid)
        {
            ev.forms.push(EventForm::new(form_oid.clone()));
        }
        let change = diff(&published, &design);
        let v = &imported.version;
        let outcome = UploadOutcome {
            form_oid: form_oid.to_string(),
            form_name: imported.form_name.clone(),
            version_oid: v.oid.to_string(),
            version_label: label,
            replaced,
            sections: v.sections.len(),
            item_groups: v.groups.len(),
            items: v.items.len(),
            code_lists: v.code_lists.len(),
            diagnostics: diags.0,
            diff: change,
        };
        let mut tx = self.store().write(who.actor()).await?;
        tx.save_design_draft(study.id, &design.canonical_json()).await?;
        tx.audit(
            AuditEntry::new("design.form_uploaded", "form_version", v.oid.as_str())
                .study(Some(study.id), None)
                .new_value(serde_json::json!({
                    "file": file_name,
                    "sha256": hex::encode(sha2::Sha256::digest(bytes)),
                    "form": form_oid.as_str(),
                    "version": outcome.version_label,
                    "replaced": replaced,
                    "items": outcome.items,
                    "event": event,
                })),
        )
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Imports a design from CDISC ODM 1.3.2 metadata into the draft: its events and forms are
    /// added, or replace the draft's ones with the same OIDs (published form versions cannot be
    /// replaced). Every problem is reported with its line and column; any error refuses the file.
    ///
    /// # Errors
    /// [`AppError::Rejected`] with the diagnostics.
    pub async fn import_design_odm(
        &self,
        who: &Principal,
        study_oid: &str,
        file_name: &str,
        bytes: &[u8],
    ) -> Result<OdmImportOutcome, AppError> {
        let study = self.design_study(who, study_oid, true).await?;
        let mut design = self.current_draft(study.id).await?;
        let (_, published) = self.published_design(study.id).await?;
        let (odm, mut diags) = casebook_formats::odm::read::read_metadata(bytes);
        let Some(odm) = odm.filter(|_| !diags.has_errors()) else {
            let n = diags.errors().count();
            return Err(rejected(format!("{file_name} was refused: {n} error(s); nothing was saved"), &diags.0));
        };
        let mut form_versions = Vec::new();
        for f in odm.design.forms {
            for v in &f.versions {
                if published.form(f.oid.as_str()).is_some_and(|pf| pf.versions.iter().any(|x| x.oid == v.oid)) {
                    diags.error(
                        Location::File,
                        format!("form version {} is published and cannot be replaced; give it a new version", v.oid),
                    );
                }
            }
            match design.forms.iter_mut().find(|x| x.oid == f.oid) {
                None => {
                    form_versions.extend(f.versions.iter().map(|v| v.oid.to_string()));
                    design.forms.push(f);
                }
                Some(existing) => {
                    for v in f.versions {
                        form_versions.push(v.oid.to_string());
                        match existing.versions.iter_mut().find(|x| x.oid == v.oid) {
                            Some(slot) => *slot = v,
                            None => existing.versions.push(v),
                        }
                    }
                }
            }
        }
        let mut events = Vec::new();
        for e in odm.design.events {
            events.push(e.oid.to_string());
            match design.events.iter_mut().find(|x| x.oid == e.oid) {
                Some(slot) => *slot = e,
                None => design.events.push(e),
            }
        }
        if diags.has_errors() {
            return Err(rejected(format!("{file_name} was refused; nothing was saved"), &diags.0));
        }
        let change = diff(&published, &design);
        let mut tx = self.store().write(who.actor()).await?;
        tx.save_design_draft(study.id, &design.canonical_json()).await?;
        tx.audit(
            AuditEntry::new("design.odm_imported", "study_design", &study.oid).study(Some(study.id), None).new_value(
                serde_json::json!({
                    "file": file_name,
                    "sha256": hex::encode(sha2::Sha256::digest(bytes)),
                    "source_study": odm.study_oid,
                    "metadata_version": odm.metadata_version_oid,
                    "form_versions": form_versions,
                    "events": events,
                }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(OdmImportOutcome {
            source_study_oid: odm.study_oid,
            metadata_version_oid: odm.metadata_version_oid,
            form_versions,
            events,
            diagnostics: diags.0,
            diff: change,
        })
    }

    /// Creates an event definition in the draft (`oid` = `None`) or replaces one.
    ///
    /// # Errors
    /// [`AppError::Validation`] naming every wrong field.
    pub async fn save_event(
        &self,
        who: &Principal,
        study_oid: &str,
        oid: Option<&str>,
        input: EventInput,
    ) -> Result<EventDef, AppError> {
        let study = self.design_study(who, study_oid, true).await?;
        let mut design = self.current_draft(study.id).await?;
        let sites = self.store().sites_of(study.id).await?;
        let mut errors = Vec::new();
        let name = casebook_domain::text_field("name", Some(&input.name), 2000, true, &mut errors);
        let event_type = match input.event_type.as_deref() {
            None => Some(EventType::Scheduled),
            Some(t) => EventType::parse(t).or_else(|| {
                errors.push(FieldError::new("type", format!("'{t}' is not scheduled, unscheduled or common")));
                None
            }),
        };
        let mut forms = Vec::new();
        for (i, f) in input.forms.iter().enumerate() {
            let at = |field: &str| format!("forms[{i}].{field}");
            let Some(form) = design.form(&f.form) else {
                errors.push(FieldError::new(at("form"), format!("the draft has no form {}", f.form)));
                continue;
            };
            if forms.iter().any(|x: &EventForm| x.form_oid == form.oid) {
                errors.push(FieldError::new(at("form"), format!("form {} is listed twice", f.form)));
            }
            let sdv = match f.sdv.as_deref() {
                None => SdvRequirement::default(),
                Some(s) => SdvRequirement::parse(s).unwrap_or_else(|| {
                    errors.push(FieldError::new(
                        at("sdv"),
                        format!("'{s}' is not full, partial, not_required or not_applicable"),
                    ));
                    SdvRequirement::default()
                }),
            };
            let mut sdv_items: Vec<Oid> = Vec::new();
            for (k, name) in f.sdv_items.iter().enumerate() {
                let found = form
                    .versions
                    .iter()
                    .flat_map(|v| v.items.iter())
                    .find(|it| it.oid.as_str() == name || it.name == *name);
                match found {
                    Some(it) if sdv_items.contains(&it.oid) => errors.push(FieldError::new(
                        format!("forms[{i}].sdv_items[{k}]"),
                        format!("item {} is listed twice", it.oid),
                    )),
                    Some(it) => sdv_items.push(it.oid.clone()),
                    None => errors.push(FieldError::new(
                        format!("forms[{i}].sdv_items[{k}]"),
                        format!("form {} has no item {name} in any version", form.oid),
                    )),
                }
            }
            if !f.sdv_items.is_empty() && sdv != SdvRequirement::Partial {
                errors.push(FieldError::new(
                    at("sdv_items"),
                    "item-level SDV needs the partial requirement (sdv: partial)",
                ));
            }
            let hidden_values = match f.hidden_values.as_deref() {
                None => HiddenValues::Clear,
                Some(h) => HiddenValues::parse(h).unwrap_or_else(|| {
                    errors.push(FieldError::new(at("hidden_values"), format!("'{h}' is not clear or refuse")));
                    HiddenValues::Clear
                }),
            };
            let version_oid = |errors: &mut Vec<FieldError>, field: String, v: &str| -> Option<Oid> {
                match form.versions.iter().find(|x| x.oid.as_str() == v || x.label == v) {
                    Some(x) => Some(x.oid.clone()),
                    None => {
                        errors.push(FieldError::new(field, format!("form {} has no version {v}", form.oid)));
                        None
                    }
                }
            };
            let default_version =
                f.default_version.as_deref().and_then(|v| version_oid(&mut errors, at("default_version"), v));
            let allowed_versions: Vec<Oid> = f
                .allowed_versions
                .iter()
                .enumerate()
                .filter_map(|(k, v)| version_oid(&mut errors, format!("forms[{i}].allowed_versions[{k}]"), v))
                .collect();
            if let Some(d) = &default_version
                && !allowed_versions.is_empty()
                && !allowed_versions.contains(d)
            {
                errors.push(FieldError::new(
                    at("default_version"),
                    "the default version must be one of the allowed versions",
                ));
            }
            let mut site_settings = std::collections::BTreeMap::new();
            for (site_oid, st) in &f.site_settings {
                if !sites.iter().any(|s| &s.oid == site_oid) {
                    errors
                        .push(FieldError::new(at("site_settings"), format!("{site_oid} is not a site of this study")));
                    continue;
                }
                let field = |x: &str| format!("forms[{i}].site_settings.{site_oid}.{x}");
                let default_version =
                    st.default_version.as_deref().and_then(|v| version_oid(&mut errors, field("default_version"), v));
                let allowed: Vec<Oid> = st
                    .allowed_versions
                    .iter()
                    .filter_map(|v| version_oid(&mut errors, field("allowed_versions"), v))
                    .collect();
                if let Some(d) = &default_version
                    && !allowed.is_empty()
                    && !allowed.contains(d)
                {
                    errors.push(FieldError::new(
                        field("default_version"),
                        "the default version must be one of the site's allowed versions",
                    ));
                }
                site_settings.insert(
                    site_oid.clone(),
                    casebook_domain::design::SiteFormSettings {
                        default_version,
                        allowed_versions: allowed,
                        hidden: st.hidden,
                    },
                );
            }
            let mut null_flavours = Vec::new();
            for code in &f.null_flavours {
                let c = code.trim().to_ascii_uppercase();
                if NULL_FLAVOURS.iter().any(|(k, _)| *k == c) {
                    null_flavours.push(c);
                } else {
                    errors.push(FieldError::new(at("null_flavours"), format!("'{code}' is not a null flavour (NI, NA, UNK, NASK, ASKU, NAV, OTH, PINF, NINF, MSK, NP, NPE)")));
                }
            }
            forms.push(EventForm {
                form_oid: form.oid.clone(),
                required: f.required,
                double_data_entry: f.double_data_entry,
                sdv,
                sdv_items,
                hidden_values,
                electronic_signature: f.electronic_signature,
                hidden_from_sites: f.hidden_from_sites,
                default_version,
                allowed_versions,
                null_flavours,
                site_settings,
            });
        }
        let (Some(name), Some(event_type)) = (name, event_type) else {
            return Err(AppError::Validation(errors));
        };
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let (old, event) = match oid {
            Some(o) => {
                let Some(pos) = design.events.iter().position(|e| e.oid.as_str() == o) else {
                    return Err(AppError::NotFound("event definition"));
                };
                let old = design.events[pos].clone();
                let e = EventDef {
                    oid: old.oid.clone(),
                    name,
                    description: input.description,
                    category: input.category,
                    event_type,
                    repeating: input.repeating,
                    forms,
                };
                design.events[pos] = e.clone();
                (Some(old), e)
            }
            None => {
                if design.events.iter().any(|e| e.name.eq_ignore_ascii_case(&name)) {
                    return Err(AppError::Conflict(format!("an event named '{name}' already exists")));
                }
                let taken = design.oids();
                let new_oid = oid::generate(
                    OidKind::EventDefinition,
                    &name,
                    |c| taken.contains(c),
                    || {
                        use rand::Rng;
                        rand::rng().random_range(0..10_000)
                    },
                );
                let e = EventDef {
                    oid: new_oid,
                    name,
                    description: input.description,
                    category: input.category,
                    event_type,
                    repeating: input.repeating,
                    forms,
                };
                design.events.push(e.clone());
                (None, e)
            }
        };
        let mut tx = self.store().write(who.actor()).await?;
        tx.save_design_draft(study.id, &design.canonical_json()).await?;
        let mut entry = AuditEntry::new("design.event_saved", "event_definition", event.oid.as_str())
            .study(Some(study.id), None)
            .new_value(serde_json::to_value(&event).map_err(internal)?);
        if let Some(o) = old {
            entry = entry.old(serde_json::to_value(&o).map_err(internal)?);
        }
        tx.audit(entry).await?;
        tx.commit().await?;
        Ok(event)
    }

    /// The draft compared with the newest published version.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown study.
    pub async fn design_diff(&self, who: &Principal, study_oid: &str) -> Result<DiffView, AppError> {
        let study = self.design_study(who, study_oid, false).await?;
        let draft = self.current_draft(study.id).await?;
        let (against, published) = self.published_design(study.id).await?;
        let d = diff(&published, &draft);
        let publishable = d.refused().next().is_none() && !d.is_empty() && check_complete(&draft).is_empty();
        let usage = self.usage(study.id).await?;
        let impact = impact_of(&d, &published, &usage);
        Ok(DiffView { against, diff: d, impact, publishable })
    }

    /// Publishes the draft as the next version, in Test.
    ///
    /// # Errors
    /// [`AppError::Rejected`] when the draft has refused changes, is incomplete, or is unchanged.
    pub async fn publish_design(
        &self,
        who: &Principal,
        study_oid: &str,
        notes: Option<String>,
    ) -> Result<PublishOutcome, AppError> {
        let study = self.design_study(who, study_oid, true).await?;
        let mut tx = self.store().write(who.actor()).await?;
        let latest = tx.latest_design_version(study.id).await?;
        let published = match &latest {
            Some(v) => parse_design(&v.document)?,
            None => StudyDesign::default(),
        };
        let draft = match tx.design_draft(study.id).await? {
            Some(d) => parse_design(&d)?,
            None => published.clone(),
        };
        let d = diff(&published, &draft);
        let refused: Vec<String> = d.refused().filter_map(|c| c.refused.clone()).collect();
        if !refused.is_empty() {
            let usage = self.usage(study.id).await?;
            let impact = impact_of(&d, &published, &usage);
            let with_data: i64 = impact.iter().map(|i| i.forms_with_data).sum();
            return Err(AppError::Rejected {
                code: "design_change_refused",
                message: format!(
                    "the draft cannot be published: {}{}",
                    refused.join("; "),
                    if with_data > 0 {
                        format!(" ({with_data} form(s) with data would be affected)")
                    } else {
                        String::new()
                    }
                ),
                details: serde_json::json!({ "diff": d, "impact": impact }),
            });
        }
        let problems = check_complete(&draft);
        if !problems.is_empty() {
            return Err(AppError::Rejected {
                code: "design_incomplete",
                message: format!("the draft cannot be published: {}", problems.join("; ")),
                details: serde_json::json!({ "problems": problems }),
            });
        }
        if d.is_empty() {
            return Err(AppError::Rejected {
                code: "design_unchanged",
                message: "the draft is the same as the published version; nothing to publish".into(),
                details: serde_json::Value::Null,
            });
        }
        let number = latest.as_ref().map_or(1, |v| v.number + 1);
        let doc = draft.canonical_json();
        let hash = draft.hash();
        let notes = notes.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        tx.insert_design_version(study.id, number, &hash, &doc, notes.as_deref()).await?;
        tx.audit(
            AuditEntry::new("design.published", "design_version", number.to_string())
                .study(Some(study.id), None)
                .new_value(serde_json::json!({ "number": number, "hash": hash, "environment": "test", "changes": d.changes.len(), "notes": notes })),
        )
        .await?;
        tx.commit().await?;
        let row = self.store().design_version(study.id, number).await?.ok_or(AppError::NotFound("design version"))?;
        Ok(PublishOutcome { version: VersionView::from(&row), diff: d })
    }

    /// Promotes a version proven in Test to Production.
    ///
    /// # Errors
    /// [`AppError::InvalidTransition`] when it is already in Production or older than the
    /// version in Production.
    pub async fn promote_design(&self, who: &Principal, study_oid: &str, number: i32) -> Result<VersionView, AppError> {
        let study = self.design_study(who, study_oid, true).await?;
        let row = self.store().design_version(study.id, number).await?.ok_or(AppError::NotFound("design version"))?;
        if row.production_at.is_some() {
            return Err(AppError::InvalidTransition(format!("version {number} is already in Production")));
        }
        if let Some(p) = self.store().design_production_version(study.id).await?
            && p.number > number
        {
            return Err(AppError::InvalidTransition(format!(
                "version {} is already in Production; an older version cannot replace it",
                p.number
            )));
        }
        let mut tx = self.store().write(who.actor()).await?;
        if tx.promote_design_version(row.id).await? != 1 {
            return Err(AppError::InvalidTransition(format!("version {number} is already in Production")));
        }
        tx.audit(
            AuditEntry::new("design.promoted", "design_version", number.to_string())
                .study(Some(study.id), None)
                .old(serde_json::json!({ "environment": "test" }))
                .new_value(serde_json::json!({ "number": number, "hash": row.hash, "environment": "production" })),
        )
        .await?;
        tx.commit().await?;
        let row = self.store().design_version(study.id, number).await?.ok_or(AppError::NotFound("design version"))?;
        Ok(VersionView::from(&row))
    }
}

/// Writes a design as ODM metadata for a study.
fn write_design(
    study: &StudyRow,
    design: &StudyDesign,
    version_label: &str,
    flavour: casebook_formats::odm::write::OdmFlavour,
    now: time::OffsetDateTime,
    rules: Option<&casebook_domain::rules::RuleSet>,
) -> Result<Vec<u8>, AppError> {
    use casebook_formats::odm::write::{StudyInfo, write_metadata};
    let details: casebook_domain::study::StudyDetails = serde_json::from_str(&study.details).map_err(internal)?;
    let description = details.summary.clone().or(details.title.clone()).unwrap_or_default();
    let file_oid = format!("{}-{}-{}", study.oid, version_label, now.unix_timestamp());
    let info = StudyInfo {
        oid: &study.oid,
        name: &study.name,
        description: &description,
        protocol_name: &details.protocol_id,
        metadata_version_oid: version_label,
        metadata_version_name: &format!("{} design {version_label}", study.name),
        rules,
    };
    let mut out = Vec::new();
    write_metadata(&mut out, &info, design, flavour, now, &file_oid).map_err(internal)?;
    Ok(out)
}

/// What a design needs before it can be published: at least one event, and every event form
/// pointing at a form with a version.
fn check_complete(design: &StudyDesign) -> Vec<String> {
    let mut out = Vec::new();
    if design.events.is_empty() {
        out.push("define at least one event".to_owned());
    }
    for e in &design.events {
        if e.forms.is_empty() {
            out.push(format!("event {} has no forms", e.oid));
        }
        for f in &e.forms {
            match design.form(f.form_oid.as_str()) {
                None => out.push(format!("event {} uses form {}, which the design does not define", e.oid, f.form_oid)),
                Some(form) if form.versions.is_empty() => out.push(format!("form {} has no version", form.oid)),
                Some(_) => {}
            }
        }
    }
    out
}
