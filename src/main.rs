//! The `casebook` binary: command line, configuration, wiring, background work.

mod bench;
mod config;

use anyhow::{Context, Result, bail};
use casebook_app::App;
use casebook_app::accounts::NewUserInput;
use casebook_domain::clock::SystemClock;
use casebook_store::Store;
use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "casebook", version, about = "Casebook: clinical trial electronic data capture")]
struct Cli {
    /// A TOML configuration file (settings can also come from CASEBOOK__SECTION__KEY variables).
    #[arg(long, global = true, env = "CASEBOOK_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Default)]
struct DbArgs {
    /// Directory for the embedded SQLite database and files (default ./casebook-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Use PostgreSQL instead of the embedded SQLite file (postgres://user@host/db).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web server (applies migrations first).
    Serve {
        /// Create the demo study, sites and users (idempotent) and print their passwords.
        #[arg(long)]
        demo: bool,
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Manage user accounts from the server's command line.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Study designs: import form definitions, publish, export.
    Design {
        #[command(subcommand)]
        command: DesignCommand,
    },
    /// Write a study's (or a site's) clinical data as CDISC ODM 1.3.2 to standard output,
    /// streamed.
    Export {
        /// Study or site OID.
        #[arg(long)]
        study: String,
        /// odm13, odm13-oc (with OpenClinica extensions) or odm2 (ODM 2.0).
        #[arg(long, default_value = "odm13", value_parser = ["odm13", "odm13-oc", "odm2"])]
        format: String,
        /// Only one participant (OID or label).
        #[arg(long)]
        participant: Option<String>,
        /// The design and AdminData (users, locations, signature meanings) with the data, in
        /// one document.
        #[arg(long)]
        full: bool,
        /// OpenClinica:DiscrepancyNotes (the notes threads; odm13-oc).
        #[arg(long)]
        notes: bool,
        /// OpenClinica:AuditLogs (the audit trail; odm13-oc).
        #[arg(long)]
        audit_logs: bool,
        /// Standard ODM AuditRecords (who last changed each record, when and why).
        #[arg(long)]
        audit_records: bool,
        /// Standard ODM Signatures on signed casebooks and events.
        #[arg(long)]
        signatures: bool,
        /// Only what changed after this time (RFC 3339, e.g. 2026-11-21T00:00:00Z).
        #[arg(long)]
        changed_since: Option<String>,
        /// Act as this user (default: the first active technical administrator).
        #[arg(long = "as")]
        as_user: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Extract a study's (or site's) data for analysis into a directory: a table (csv-wide, one
    /// row per participant with OpenClinica's column names; csv-long, one row per value; tsv,
    /// tab-delimited wide; xlsx, spss, sas, stata: the wide table typed, with labels; r: the wide
    /// CSV and an R script; dataset-json: one file per item group; odm13, odm13-oc) and its data
    /// dictionary; prints each file with its size and SHA-256.
    Extract {
        /// Study or site OID.
        #[arg(long)]
        study: String,
        /// csv-wide, csv-long, tsv, xlsx, spss, sas, stata, r, dataset-json, odm13, odm13-oc, or a
        /// format module's name (built in: redcap-csv, html-listing; more under DATA_DIR/modules).
        #[arg(long, default_value = "csv-wide")]
        format: String,
        /// The directory to write into (created if needed).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Include items marked PHI (data managers and study directors only).
        #[arg(long)]
        include_phi: bool,
        /// A saved dataset (its newest version) instead of every item.
        #[arg(long)]
        dataset: Option<String>,
        /// Act as this user (default: the first active technical administrator).
        #[arg(long = "as")]
        as_user: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Import a CDISC ODM ClinicalData file into a study, all or nothing (or only check it with
    /// `--dry-run`): prints every problem with its line, participant, event, form, item and
    /// value; exits 0 only when the file was accepted.
    Import {
        file: std::path::PathBuf,
        /// Study OID.
        #[arg(long)]
        study: String,
        /// Check only; nothing is written.
        #[arg(long)]
        dry_run: bool,
        /// all-or-nothing (one transaction; any error refuses the file) or per-record (each
        /// clean form written on its own; a CSV log of every form on standard output).
        #[arg(long, default_value = "all-or-nothing", value_parser = ["all-or-nothing", "per-record"])]
        mode: String,
        /// Act as this user (default: the first active technical administrator).
        #[arg(long = "as")]
        as_user: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Benchmarks, each figure next to a raw baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// OpenClinica rules: import a rules file, run the rules over the data.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// ODM clinical data import (all or nothing, audited) and export: items/s against plain
    /// multi-row INSERTs and a bare quick-xml writer, and the peak memory of each; on SQLite in a
    /// temporary directory, and on PostgreSQL too when `--database-url` is given.
    Odm {
        /// Participants of the generated file (10 events × 5 forms × 20 items = 1,000 values
        /// each; the default is a Phase III trial's 5 million values).
        #[arg(long, default_value_t = 5000)]
        participants: usize,
        /// A PostgreSQL server (postgres://user@host/db, a user who may create databases): a
        /// scratch database casebook_bench_<pid> is created there and dropped at the end.
        #[arg(long)]
        database_url: Option<String>,
        /// Also import and export the file made by shared/tools/sdtm_to_odm.py (metadata and
        /// data; the metadata become the design).
        #[arg(long)]
        sdtm_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Import an OpenClinica rules XML file into a study, checked against the design in
    /// Production; prints what each rule does and every problem, exits 0 only when accepted.
    Import {
        file: std::path::PathBuf,
        /// Study OID.
        #[arg(long)]
        study: String,
        /// Check and show the rules without saving them.
        #[arg(long)]
        preview: bool,
        /// Act as this user (default: the first active technical administrator).
        #[arg(long = "as")]
        as_user: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Run the study's rules over its data (their batch actions); `--dry-run` only reports.
    Run {
        /// Study OID.
        #[arg(long)]
        study: String,
        #[arg(long)]
        dry_run: bool,
        /// Only this rule (OID).
        #[arg(long)]
        rule: Option<String>,
        /// Act as this user (default: the first active technical administrator).
        #[arg(long = "as")]
        as_user: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum DesignCommand {
    /// Import a form definition (XLSForm or OpenClinica CRF template) into a study's draft
    /// design; prints every problem found and exits 0 only when the file is accepted.
    Import {
        /// The file (.xlsx, .xls).
        file: std::path::PathBuf,
        /// Study OID.
        #[arg(long)]
        study: String,
        /// Add the form to this event (OID) of the draft.
        #[arg(long)]
        event: Option<String>,
        /// Then publish the draft to Test, or to Test and Production.
        #[arg(long, value_parser = ["test", "production"])]
        publish: Option<String>,
        /// Act as this user (default: the first active technical administrator).
        #[arg(long = "as")]
        as_user: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Write a study's design as CDISC ODM metadata to standard output.
    Export {
        /// Study OID.
        #[arg(long)]
        study: String,
        /// odm13, odm13-oc (with OpenClinica extensions) or odm2.
        #[arg(long, default_value = "odm13", value_parser = ["odm13", "odm13-oc", "odm2"])]
        format: String,
        /// draft, test, production or a version number.
        #[arg(long, default_value = "production")]
        version: String,
        /// Act as this user (default: the first active technical administrator).
        #[arg(long = "as")]
        as_user: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        institution: Option<String>,
        /// technical_administrator, business_administrator or user.
        #[arg(long = "type", default_value = "user")]
        user_type: String,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Create a technical administrator (the operator bootstrap; no web UI needed).
    CreateAdmin {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "System")]
        first_name: String,
        #[arg(long, default_value = "Administrator")]
        last_name: String,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Set a user's password (read from standard input) and unlock the account.
    SetPassword {
        #[arg(long)]
        username: String,
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Seal pending audit rows and verify the hash chain; exit 1 at the first broken link.
    Verify {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Print audit rows (JSON lines) of a study, a user or one record.
    Show {
        /// Study OID.
        #[arg(long)]
        study: Option<String>,
        /// Username (rows by and about the user).
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        entity_type: Option<String>,
        #[arg(long)]
        entity_id: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[command(flatten)]
        db: DbArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_password() -> Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("reading the password from standard input")?;
    let p = s.trim_end_matches(['\n', '\r']).to_owned();
    if p.is_empty() {
        bail!("no password on standard input");
    }
    Ok(p)
}

async fn open(settings: &config::Settings) -> Result<App> {
    let url = settings.database_url()?;
    let db = casebook_store::connect(&url, settings.server.max_connections)
        .await
        .with_context(|| format!("connecting to the database {}", config::redact(&url)))?;
    db.migrate().await.context("applying database migrations")?;
    let store = Store::new(db, Arc::new(SystemClock));
    Ok(App::new(store, settings.security.clone()).with_extracts(
        settings.server.data_dir.join("extracts"),
        settings.extract.concurrent,
        Some(settings.server.data_dir.join("modules")),
    ))
}

fn app_error(e: casebook_app::AppError) -> anyhow::Error {
    match e {
        casebook_app::AppError::Validation(fields) => {
            anyhow::anyhow!("{}", fields.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        }
        other => anyhow::anyhow!("{other}"),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config_file = cli.config.clone();
    let load = |db: &DbArgs, bind: Option<String>| {
        config::Settings::load(config_file.as_deref(), db.data_dir.clone(), db.database_url.clone(), bind)
    };
    match cli.command {
        Command::Serve { demo, bind, db } => {
            let settings = load(&db, bind)?;
            config::init_logging(&settings.log);
            serve(settings, demo).await?;
        }
        Command::Migrate { db } => {
            let settings = load(&db, None)?;
            let app = open(&settings).await?;
            println!("migrations applied to {}", config::redact(&settings.database_url()?));
            app.store().db().close().await;
        }
        Command::User { command } => match command {
            UserCommand::Create {
                username,
                first_name,
                last_name,
                email,
                institution,
                user_type,
                password_stdin: _,
                db,
            } => {
                let settings = load(&db, None)?;
                let app = open(&settings).await?;
                let password = read_password()?;
                let input = NewUserInput {
                    username,
                    first_name,
                    last_name,
                    email,
                    institution,
                    user_type: Some(user_type),
                    password: Some(password),
                };
                let created =
                    app.create_user_as_system(input, casebook_domain::audit::Channel::Cli).await.map_err(app_error)?;
                println!("created user {} ({})", created.user.username, created.user.user_type);
            }
            UserCommand::CreateAdmin { username, first_name, last_name, email, password_stdin: _, db } => {
                let settings = load(&db, None)?;
                let app = open(&settings).await?;
                let password = read_password()?;
                let email = email.unwrap_or_else(|| format!("{username}@localhost.localdomain"));
                let input = NewUserInput {
                    username,
                    first_name,
                    last_name,
                    email,
                    institution: None,
                    user_type: None,
                    password: Some(password),
                };
                let created = app.bootstrap_admin(input).await.map_err(app_error)?;
                println!("created technical administrator {}", created.user.username);
            }
            UserCommand::SetPassword { username, password_stdin: _, db } => {
                let settings = load(&db, None)?;
                let app = open(&settings).await?;
                let password = read_password()?;
                app.set_password_cli(&username, &password).await.map_err(app_error)?;
                println!("password set for {username}");
            }
        },
        Command::Design { command } => match command {
            DesignCommand::Import { file, study, event, publish, as_user, db } => {
                let settings = load(&db, None)?;
                let app = open(&settings).await?;
                return design_import(&app, &file, &study, event.as_deref(), publish.as_deref(), as_user.as_deref())
                    .await;
            }
            DesignCommand::Export { study, format, version, as_user, db } => {
                let settings = load(&db, None)?;
                let app = open(&settings).await?;
                let who = app.cli_principal(as_user.as_deref()).await.map_err(app_error)?;
                let which = casebook_app::design::Which::parse(&version).map_err(app_error)?;
                let xml = app.export_design(&who, &study, which, &format).await.map_err(app_error)?;
                std::io::Write::write_all(&mut std::io::stdout(), &xml)?;
            }
        },
        Command::Export {
            study,
            format,
            participant,
            full,
            notes,
            audit_logs,
            audit_records,
            signatures,
            changed_since,
            as_user,
            db,
        } => {
            if (notes || audit_logs) && format != "odm13-oc" {
                bail!("--notes and --audit-logs are OpenClinica's extensions: use --format odm13-oc");
            }
            let settings = load(&db, None)?;
            let app = open(&settings).await?;
            let who = app.cli_principal(as_user.as_deref()).await.map_err(app_error)?;
            let changed_since = match changed_since {
                None => None,
                Some(t) => Some(
                    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .with_context(|| format!("--changed-since '{t}' is not an RFC 3339 time"))?,
                ),
            };
            let req = casebook_app::export::ClinicalExport {
                participant,
                event: None,
                form: None,
                openclinica: format == "odm13-oc",
                odm20: format == "odm2",
                changed_since,
                notes,
                audit_logs,
                audit_records,
                signatures,
                ..Default::default()
            };
            let mut failed: Option<std::io::Error> = None;
            let sink = |chunk: Vec<u8>| {
                let ok = failed.is_none() && std::io::Write::write_all(&mut std::io::stdout().lock(), &chunk).is_ok();
                if !ok && failed.is_none() {
                    failed = Some(std::io::Error::other("writing to standard output failed"));
                }
                std::future::ready(ok)
            };
            let count = if full {
                app.export_full(&who, &study, &req, sink).await
            } else {
                app.export_clinical(&who, &study, &req, sink).await
            }
            .map_err(app_error)?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            eprintln!(
                "exported {} participants, {} events, {} forms, {} values",
                count.participants, count.events, count.forms, count.values
            );
        }
        Command::Extract { study, format, out, include_phi, dataset, as_user, db } => {
            let settings = load(&db, None)?;
            let app = open(&settings).await?;
            let who = app.cli_principal(as_user.as_deref()).await.map_err(app_error)?;
            let mut selection = match &dataset {
                Some(name) => app.dataset(&who, &study, name).await.map_err(app_error)?.definition,
                None => casebook_app::extract::DatasetDefinition::default(),
            };
            selection.include_phi |= include_phi;
            let outcome = app.extract_named(&who, &study, &format, &selection, &out).await.map_err(app_error)?;
            for f in &outcome.files {
                println!("{}  {} bytes  sha256 {}", out.join(&f.name).display(), f.bytes, f.sha256);
            }
            if !outcome.phi_left_out.is_empty() {
                println!("PHI items left out: {}", outcome.phi_left_out.join(", "));
            }
            eprintln!(
                "extracted {} participants, {} values ({})",
                outcome.participants, outcome.values, outcome.format
            );
        }
        Command::Import { file, study, dry_run, mode, as_user, db } => {
            let settings = load(&db, None)?;
            let app = open(&settings).await?;
            let who = app.cli_principal(as_user.as_deref()).await.map_err(app_error)?;
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("clinical-data.xml").to_owned();
            std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?;
            let source = casebook_app::import::ImportSource::file(file.clone(), false);
            let watcher = tokio::spawn(watch_import(std::sync::Arc::clone(source.progress())));
            let report = if dry_run {
                app.check_clinical_source(&who, &study, &name, source).await
            } else if mode == "per-record" {
                app.import_clinical_per_record(&who, &study, &name, source).await
            } else {
                app.import_clinical(&who, &study, &name, source).await
            };
            watcher.abort();
            let report = report.map_err(app_error)?;
            if !report.log.is_empty() {
                print!("{}", report.log_csv(app.store().clock().now()));
            }
            for (kind, list) in [("error", &report.errors), ("warning", &report.warnings)] {
                for p in list {
                    let mut place = Vec::new();
                    for (k, v) in
                        [("participant", &p.participant), ("event", &p.event), ("form", &p.form), ("item", &p.item)]
                    {
                        if let Some(v) = v {
                            place.push(format!("{k} {v}"));
                        }
                    }
                    if let Some(r) = p.row {
                        place.push(format!("row {r}"));
                    }
                    if let Some(v) = &p.value {
                        place.push(format!("value '{v}'"));
                    }
                    println!(
                        "{kind}: line {}, column {}: {}: {} [{}]",
                        p.line,
                        p.column,
                        place.join(", "),
                        p.message,
                        p.code
                    );
                }
            }
            let outcome = match (report.accepted, dry_run) {
                (true, true) => "accepted (dry run: nothing written)".to_owned(),
                (true, false) => format!(
                    "imported: {} form(s) changed, {} marked complete",
                    report.written_forms, report.completed_forms
                ),
                (false, _) => "refused: nothing written".to_owned(),
            };
            println!(
                "{outcome}; {} participants, {} events, {} forms, {} values; {} error(s), {} warning(s){}",
                report.participants,
                report.events,
                report.forms,
                report.values,
                report.errors.len(),
                report.warnings.len(),
                if report.truncated { ", more not listed" } else { "" }
            );
            return Ok(if report.accepted { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        Command::Bench { command: BenchCommand::Odm { participants, database_url, sdtm_file } } => {
            bench::run(bench::OdmBench { participants, database_url, sdtm_file }).await?;
        }
        Command::Rules { command } => match command {
            RulesCommand::Import { file, study, preview, as_user, db } => {
                let settings = load(&db, None)?;
                let app = open(&settings).await?;
                let who = app.cli_principal(as_user.as_deref()).await.map_err(app_error)?;
                let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("rules.xml");
                match app.import_rules(&who, &study, name, &bytes, preview).await {
                    Ok(out) => {
                        for d in &out.diagnostics {
                            println!("{d}");
                        }
                        for (r, c) in out.rules.iter().zip(&out.changes) {
                            println!("{} on {}: {} [{} v{}]", r.rule_oid, r.target, r.expression, c.change, c.version);
                            for a in &r.actions {
                                println!("    {a}");
                            }
                        }
                        println!(
                            "{}: {} rule(s) on their targets",
                            if out.saved { "imported" } else { "preview (nothing saved)" },
                            out.rules.len()
                        );
                    }
                    Err(casebook_app::AppError::Rejected { message, details, .. }) => {
                        print_diagnostics(&details);
                        eprintln!("error: {message}");
                        return Ok(ExitCode::from(1));
                    }
                    Err(e) => return Err(app_error(e)),
                }
            }
            RulesCommand::Run { study, dry_run, rule, as_user, db } => {
                let settings = load(&db, None)?;
                let app = open(&settings).await?;
                let who = app.cli_principal(as_user.as_deref()).await.map_err(app_error)?;
                let input = casebook_app::rules_engine::BatchInput { dry_run, rule, participant: None };
                let out = app.run_rules_batch(&who, &study, input).await.map_err(app_error)?;
                for (what, n) in &out.counts {
                    println!("{what}: {n}");
                }
                println!(
                    "{} rule(s) over {} participant(s): {} evaluations in {:.2} s ({:.0}/s){}",
                    out.rules,
                    out.participants,
                    out.evaluated,
                    out.seconds,
                    out.evaluated as f64 / out.seconds.max(1e-9),
                    if out.dry_run { "; dry run, nothing changed" } else { "" }
                );
            }
        },
        Command::Audit { command } => match command {
            AuditCommand::Verify { db } => {
                let settings = load(&db, None)?;
                let app = open(&settings).await?;
                let report = app.verify_audit().await.map_err(app_error)?;
                if let Some(b) = &report.first_break {
                    println!(
                        "audit trail BROKEN at chain position {} (audit event {}): {}",
                        b.position, b.seq, b.problem
                    );
                    println!("{} events verified before the break", report.sealed);
                    return Ok(ExitCode::from(1));
                }
                if !report.unsealed_seqs.is_empty() {
                    println!(
                        "audit trail BROKEN: events outside the hash chain (inserted after sealing): {:?}",
                        report.unsealed_seqs
                    );
                    return Ok(ExitCode::from(1));
                }
                println!("audit trail intact: {} events verified", report.sealed);
            }
            AuditCommand::Show { study, user, entity_type, entity_id, limit, db } => {
                let settings = load(&db, None)?;
                let app = open(&settings).await?;
                show_audit(&app, study, user, entity_type, entity_id, limit).await?;
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_audit(
    app: &App,
    study: Option<String>,
    user: Option<String>,
    entity_type: Option<String>,
    entity_id: Option<String>,
    limit: i64,
) -> Result<()> {
    use casebook_store::audit::AuditFilter;
    let store = app.store();
    let mut filter = AuditFilter { limit: limit.clamp(1, 1_000_000), ..AuditFilter::default() };
    if let Some(oid) = study {
        let s = store.study_by_oid(&oid).await?.with_context(|| format!("no study with OID {oid}"))?;
        filter.study_id = Some(s.id);
    }
    if let Some(u) = user {
        let row = store.user_by_username(&u).await?.with_context(|| format!("no user {u}"))?;
        filter.actor_user_id = Some(row.id);
    }
    filter.entity_type = entity_type;
    filter.entity_id = entity_id;
    for r in store.audit_events(&filter).await? {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

/// Every minute: starts the scheduled extracts that are due; every hour: removes the files of
/// runs older than the retention setting.
async fn extracts_forever(app: App, retention_days: u32) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    let mut minutes: u32 = 0;
    loop {
        tick.tick().await;
        if let Err(e) = app.run_due_schedules().await {
            tracing::warn!(error = %e, "starting scheduled extracts failed");
        }
        if minutes.is_multiple_of(60) {
            match app.prune_extracts(retention_days).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(runs = n, "removed the files of old extract runs"),
                Err(e) => tracing::warn!(error = %e, "pruning old extract runs failed"),
            }
        }
        minutes = minutes.wrapping_add(1);
    }
}

/// Reports an import's progress on standard error (a line when a pass starts, then every two
/// seconds), and cancels it on Ctrl-C: an all-or-nothing import then writes nothing.
async fn watch_import(progress: std::sync::Arc<casebook_app::import::ImportProgress>) {
    let mut last_phase = "";
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(200));
    let mut n: u32 = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut ctrl_c => {
                eprintln!("cancelling the import (Ctrl-C) ...");
                progress.cancel();
                return;
            }
        }
        n += 1;
        let v = progress.view();
        if v.phase != last_phase || n.is_multiple_of(10) {
            if v.phase == "checking" || v.phase == "writing" {
                eprintln!(
                    "{}: {}% ({} of {} bytes read, {} forms written)",
                    v.phase, v.percent, v.bytes_read, v.total_bytes, v.forms_written
                );
            }
            last_phase = v.phase;
        }
    }
}

async fn design_import(
    app: &App,
    file: &std::path::Path,
    study: &str,
    event: Option<&str>,
    publish: Option<&str>,
    as_user: Option<&str>,
) -> Result<ExitCode> {
    let who = app.cli_principal(as_user).await.map_err(app_error)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("form.xlsx");
    let result = if name.to_ascii_lowercase().ends_with(".xml") {
        app.import_design_odm(&who, study, name, &bytes).await.map(|out| {
            for d in &out.diagnostics {
                println!("{d}");
            }
            println!(
                "accepted: ODM study {} ({}): form versions {}; events {}",
                out.source_study_oid,
                out.metadata_version_oid,
                out.form_versions.join(", "),
                out.events.join(", ")
            );
        })
    } else {
        app.upload_form(&who, study, name, &bytes, event).await.map(|out| {
            for d in &out.diagnostics {
                println!("{d}");
            }
            println!(
                "accepted: form {} ({}) version {} ({}): {} sections, {} item groups, {} items, {} code lists{}",
                out.form_oid,
                out.form_name,
                out.version_label,
                out.version_oid,
                out.sections,
                out.item_groups,
                out.items,
                out.code_lists,
                if out.replaced { "; replaced the unpublished version with the same label" } else { "" }
            );
        })
    };
    match result {
        Ok(()) => {}
        Err(casebook_app::AppError::Rejected { message, details, .. }) => {
            print_diagnostics(&details);
            eprintln!("error: {message}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(app_error(e)),
    }
    if let Some(target) = publish {
        let published = app.publish_design(&who, study, None).await.map_err(app_error)?;
        println!("published version {} (hash {}) to Test", published.version.number, published.version.hash);
        if target == "production" {
            app.promote_design(&who, study, published.version.number).await.map_err(app_error)?;
            println!("promoted version {} to Production", published.version.number);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the diagnostics of a refused file, each with its place.
fn print_diagnostics(details: &serde_json::Value) {
    let Some(list) = details.get("diagnostics").and_then(|d| d.as_array()) else { return };
    for d in list {
        let loc = &d["location"];
        let place = match loc["kind"].as_str() {
            Some("sheet") => {
                let mut p = format!("sheet '{}'", loc["sheet"].as_str().unwrap_or(""));
                if let Some(r) = loc["row"].as_u64() {
                    p.push_str(&format!(", row {r}"));
                }
                if let Some(c) = loc["column"].as_str() {
                    p.push_str(&format!(", column '{c}'"));
                }
                p
            }
            Some("xml") => format!("line {}, column {}", loc["line"], loc["column"]),
            _ => "file".to_owned(),
        };
        println!("{}: {place}: {}", d["severity"].as_str().unwrap_or("error"), d["message"].as_str().unwrap_or(""));
    }
}

async fn serve(settings: config::Settings, demo: bool) -> Result<()> {
    let started = std::time::Instant::now();
    let app = open(&settings).await?;
    if demo {
        let created = app.seed_demo().await.map_err(app_error)?;
        if created {
            let n = app.seed_demo_data().await.map_err(app_error)?;
            println!("Demo participants enrolled with data in various statuses: {n}");
        }
        print_demo(created);
    } else if app.store().count_users().await? == 0 {
        println!("No accounts yet. Create the first administrator with:");
        println!("  casebook user create-admin --username admin --password-stdin");
    }
    let interrupted = app.fail_interrupted_jobs().await.map_err(app_error)?;
    if interrupted > 0 {
        tracing::warn!(jobs = interrupted, "import jobs interrupted by the last stop were marked failed");
    }
    let (failed, resumed) = app.resume_extracts().await.map_err(app_error)?;
    if failed + u64::try_from(resumed).unwrap_or(0) > 0 {
        tracing::warn!(failed, resumed, "extract runs: interrupted ones marked failed, queued ones started again");
    }
    let listener = tokio::net::TcpListener::bind(&settings.server.bind)
        .await
        .with_context(|| format!("listening on {}", settings.server.bind))?;
    let addr = listener.local_addr()?;
    let state =
        casebook_web::AppState { app: app.clone(), web: Arc::new(settings.http.clone()), metrics: Arc::default() };
    let sealer = tokio::spawn(seal_forever(app.clone(), settings.audit.seal_interval_seconds));
    let mailer = tokio::spawn(mail_forever(app.clone(), settings.mail.clone()));
    let scheduler = tokio::spawn(rules_forever(app.clone()));
    let extracts = tokio::spawn(extracts_forever(app.clone(), settings.extract.retention_days));
    println!("Casebook listening on http://{addr} (started in {} ms)", started.elapsed().as_millis());
    tracing::info!(%addr, database = %config::redact(&settings.database_url()?), "listening");
    casebook_web::serve(listener, state, shutdown_signal()).await.context("serving HTTP")?;
    sealer.abort();
    mailer.abort();
    scheduler.abort();
    extracts.abort();
    if let Err(e) = app.store().seal_audit().await {
        tracing::warn!(error = %e, "final audit seal failed");
    }
    app.store().db().close().await;
    println!("Casebook stopped");
    Ok(())
}

fn print_demo(created: bool) {
    println!(
        "Demo study DEMO (OID S_DEMO) with sites DEMO-A and DEMO-B {}.",
        if created { "created" } else { "already present" }
    );
    println!("Its design (events Baseline and Follow-up; forms from demo/forms/) is published in Test and Production.");
    println!("Demo users (password for all: {}):", casebook_app::demo::DEMO_PASSWORD);
    for (username, _, _, ty, place, role) in casebook_app::demo::DEMO_USERS {
        let what = match (place, role) {
            (Some(p), Some(r)) => format!("{r} at {p}"),
            _ => (*ty).to_owned(),
        };
        println!("  {username:<22} {what}");
    }
}

/// Seals the audit trail every few seconds, so the hash chain stays close to the head.
async fn seal_forever(app: App, every_seconds: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(every_seconds.max(1)));
    loop {
        tick.tick().await;
        if let Err(e) = app.store().seal_audit().await {
            tracing::warn!(error = %e, "sealing the audit trail failed; will retry");
        }
        let cutoff = app.store().clock().now() - app.security().idle_timeout();
        if let Err(e) = app.store().purge_sessions(cutoff).await {
            tracing::warn!(error = %e, "purging expired sessions failed");
        }
    }
}

/// Runs the rules with a daily `RunOnSchedule` time once their time has come (checked every
/// minute).
async fn rules_forever(app: App) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(e) = app.run_scheduled_rules().await {
            tracing::warn!(error = %e, "scheduled rule runs failed; will retry");
        }
    }
}

/// Hands queued notification e-mails to the SMTP relay, if one is configured.
async fn mail_forever(app: App, settings: casebook_app::mail::MailSettings) {
    if settings.smtp_host.trim().is_empty() {
        tracing::info!("no mail.smtp_host: notification e-mails stay queued in the outbox");
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(settings.interval_seconds));
    loop {
        tick.tick().await;
        match app.deliver_outbox(&settings).await {
            Ok(d) if d.sent + d.retrying + d.failed > 0 => {
                tracing::info!(sent = d.sent, retrying = d.retrying, failed = d.failed, "notification e-mails");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the outbox failed; will retry"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
