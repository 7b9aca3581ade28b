//! Extract format modules: an administrator adds a format without recompiling, as a folder
//! holding `module.json` (name, description, file extension) and three minijinja templates —
//! `header.jinja` (once, before the rows), `row.jinja` (once per participant row of the wide
//! table) and `footer.jinja` (once, after) — so a module streams like the built-in formats.
//!
//! What a template sees: `study` (`oid`, `name`), `columns` (each `name`, `label`, `kind`,
//! `item_oid` for item columns, `value_labels` as a code → label map), `extracted_at`; a row
//! also `row` (column name → value), `cells` (the values in column order) and `participant`
//! (`label`, `oid`, `site`, `status`); the footer `count`. A `csv` filter quotes a value for CSV.
//! Nothing else: no loader is set, so a template cannot include or read any file, and it only
//! ever gets the dataset it is rendering. HTML modules (extension `html`) escape their output.
//!
//! Two example modules ship with Casebook (`modules/` in the repository, built in): a REDCap-
//! style import CSV and an HTML listing. Administrators add theirs under the modules folder
//! (`{data_dir}/modules`); `docs/modules.md` is the guide.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::AppError;

/// A module's manifest (`module.json`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Its format name (`--format NAME`): letters, digits and `-`.
    pub name: String,
    pub description: String,
    /// The extension of the file it writes (`csv`, `html`, `txt` …).
    pub extension: String,
}

/// A loaded, checked module.
#[derive(Debug, Clone)]
pub struct FormatModule {
    pub manifest: Manifest,
    header: String,
    row: String,
    footer: String,
    /// Where it came from (`built in` or its folder).
    pub source: String,
}

const BUILT_IN: [(&str, &str, &str, &str); 2] = [
    (
        include_str!("../../../modules/redcap-csv/module.json"),
        include_str!("../../../modules/redcap-csv/header.jinja"),
        include_str!("../../../modules/redcap-csv/row.jinja"),
        "",
    ),
    (
        include_str!("../../../modules/html-listing/module.json"),
        include_str!("../../../modules/html-listing/header.jinja"),
        include_str!("../../../modules/html-listing/row.jinja"),
        include_str!("../../../modules/html-listing/footer.jinja"),
    ),
];

/// Quotes a value for CSV (RFC 4180).
fn csv_filter(value: String) -> String {
    if value.contains([',', '"', '\n', '\r']) { format!("\"{}\"", value.replace('"', "\"\"")) } else { value }
}

impl FormatModule {
    /// Builds and checks a module from its manifest and templates; every problem names the file
    /// and, for templates, the line.
    ///
    /// # Errors
    /// The problems, one per line.
    pub fn new(manifest: &str, header: &str, row: &str, footer: &str, source: &str) -> Result<Self, String> {
        let manifest: Manifest = serde_json::from_str(manifest).map_err(|e| format!("{source}: module.json: {e}"))?;
        let mut problems = Vec::new();
        if manifest.name.is_empty() || !manifest.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            problems.push(format!("{source}: module.json: name '{}' must be letters, digits and '-'", manifest.name));
        }
        if manifest.extension.is_empty() || !manifest.extension.chars().all(|c| c.is_ascii_alphanumeric()) {
            problems
                .push(format!("{source}: module.json: extension '{}' must be letters and digits", manifest.extension));
        }
        let module = Self {
            manifest,
            header: header.to_owned(),
            row: row.to_owned(),
            footer: footer.to_owned(),
            source: source.to_owned(),
        };
        if let Err(e) = module.environment() {
            problems.push(e);
        }
        if problems.is_empty() { Ok(module) } else { Err(problems.join("\n")) }
    }

    /// A template environment holding the module's three templates, checked.
    fn environment(&self) -> Result<minijinja::Environment<'static>, String> {
        let mut env = minijinja::Environment::new();
        env.add_filter("csv", csv_filter);
        let html = self.manifest.extension.eq_ignore_ascii_case("html");
        env.set_auto_escape_callback(
            move |_| {
                if html { minijinja::AutoEscape::Html } else { minijinja::AutoEscape::None }
            },
        );
        for (name, text) in [("header.jinja", &self.header), ("row.jinja", &self.row), ("footer.jinja", &self.footer)] {
            env.add_template_owned(name.to_owned(), text.clone()).map_err(|e| describe(&self.source, &e))?;
        }
        Ok(env)
    }
}

/// A template error with its file and line.
fn describe(source: &str, e: &minijinja::Error) -> String {
    match (e.name(), e.line()) {
        (Some(name), Some(line)) => format!("{source}: {name} line {line}: {}", e.detail().unwrap_or(&e.to_string())),
        _ => format!("{source}: {e}"),
    }
}

/// The modules: the built-in examples, then those under `dir` (a folder per module); a module
/// with problems is left out and its problems returned.
#[must_use]
pub fn load_modules(dir: Option<&Path>) -> (Vec<FormatModule>, Vec<String>) {
    let mut modules = Vec::new();
    let mut problems = Vec::new();
    for (m, h, r, f) in BUILT_IN {
        match FormatModule::new(m, h, r, f, "built in") {
            Ok(module) => modules.push(module),
            Err(p) => problems.push(p),
        }
    }
    let Some(dir) = dir else { return (modules, problems) };
    let Ok(entries) = std::fs::read_dir(dir) else { return (modules, problems) };
    let mut folders: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    folders.sort();
    for folder in folders {
        let read = |name: &str| std::fs::read_to_string(folder.join(name));
        let source = folder.display().to_string();
        let (Ok(manifest), Ok(header), Ok(row)) = (read("module.json"), read("header.jinja"), read("row.jinja")) else {
            problems.push(format!("{source}: a module needs module.json, header.jinja and row.jinja"));
            continue;
        };
        let footer = read("footer.jinja").unwrap_or_default();
        match FormatModule::new(&manifest, &header, &row, &footer, &source) {
            Ok(m) if modules.iter().any(|x: &FormatModule| x.manifest.name == m.manifest.name) => {
                problems.push(format!("{source}: a module named {} is already loaded", m.manifest.name));
            }
            Ok(m) => modules.push(m),
            Err(p) => problems.push(p),
        }
    }
    (modules, problems)
}

/// Renders a module's templates as the extract streams: the header, each row, the footer.
pub(crate) struct ModuleRenderer {
    env: minijinja::Environment<'static>,
    base: serde_json::Value,
    source: String,
    count: usize,
}

impl ModuleRenderer {
    /// # Errors
    /// A template error, with its file and line.
    pub(crate) fn new(module: &FormatModule, base: serde_json::Value) -> Result<Self, AppError> {
        let env = module.environment().map_err(|m| AppError::invalid("format", m))?;
        Ok(Self { env, base, source: module.source.clone(), count: 0 })
    }

    fn render(&self, template: &str, extra: serde_json::Value) -> Result<String, AppError> {
        let mut ctx = self.base.clone();
        if let (Some(map), serde_json::Value::Object(more)) = (ctx.as_object_mut(), extra) {
            map.extend(more);
        }
        let t = self.env.get_template(template).map_err(|e| AppError::invalid("format", describe(&self.source, &e)))?;
        t.render(minijinja::Value::from_serialize(&ctx))
            .map_err(|e| AppError::invalid("format", describe(&self.source, &e)))
    }

    /// The header's text.
    pub(crate) fn header(&self) -> Result<String, AppError> {
        self.render("header.jinja", serde_json::json!({})).map(|s| line(&s))
    }

    /// One row's text.
    pub(crate) fn row(&mut self, row: serde_json::Value) -> Result<String, AppError> {
        self.count += 1;
        self.render("row.jinja", row).map(|s| line(&s))
    }

    /// The footer's text.
    pub(crate) fn footer(&self) -> Result<String, AppError> {
        let text = self.render("footer.jinja", serde_json::json!({ "count": self.count }))?;
        Ok(if text.trim().is_empty() { String::new() } else { line(&text) })
    }
}

/// A rendered piece as one or more lines ending with a line break.
fn line(s: &str) -> String {
    let t = s.trim_end_matches(['\n', '\r']);
    format!("{t}\n")
}
