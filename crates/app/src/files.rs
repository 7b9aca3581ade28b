//! Files as item values: a FILE item's value is a reference to a file stored in the database.
//!
//! Uploads are limited in size and to common document and image types, and the content must
//! look like its extension says (a renamed executable is refused). The stored file is immutable;
//! replacing it stores a new file and changes the item value (audited as any change).

use casebook_domain::audit::AuditEntry;
use casebook_domain::design::DataType;
use serde::Serialize;
use sha2::Digest;

use crate::App;
use crate::auth::Principal;
use crate::entry::{SaveFormInput, SavedForm, ValueInput};
use crate::error::AppError;

/// The largest file accepted as an item value.
pub const MAX_FILE_BYTES: usize = 10 * 1024 * 1024;

/// Accepted extensions, their content type, and how their content starts (`None`: any bytes
/// that are valid UTF-8 text).
const TYPES: &[(&str, &str, Option<&[u8]>)] = &[
    ("pdf", "application/pdf", Some(b"%PDF")),
    ("png", "image/png", Some(b"\x89PNG")),
    ("jpg", "image/jpeg", Some(b"\xFF\xD8\xFF")),
    ("jpeg", "image/jpeg", Some(b"\xFF\xD8\xFF")),
    ("gif", "image/gif", Some(b"GIF8")),
    ("tif", "image/tiff", None),
    ("tiff", "image/tiff", None),
    ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", Some(b"PK\x03\x04")),
    ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", Some(b"PK\x03\x04")),
    ("odt", "application/vnd.oasis.opendocument.text", Some(b"PK\x03\x04")),
    ("ods", "application/vnd.oasis.opendocument.spreadsheet", Some(b"PK\x03\x04")),
    ("doc", "application/msword", Some(b"\xD0\xCF\x11\xE0")),
    ("xls", "application/vnd.ms-excel", Some(b"\xD0\xCF\x11\xE0")),
    ("txt", "text/plain", None),
    ("csv", "text/csv", None),
];

fn content_ok(ext: &str, magic: Option<&[u8]>, bytes: &[u8]) -> bool {
    match (ext, magic) {
        ("tif" | "tiff", _) => bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*"),
        (_, Some(m)) => bytes.starts_with(m),
        (_, None) => std::str::from_utf8(bytes).is_ok(),
    }
}

/// A stored file's description.
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    pub id: i64,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
}

impl App {
    /// Stores an uploaded file and saves its reference as the value of a FILE item.
    ///
    /// # Errors
    /// [`AppError::Validation`] for an empty, oversized, unknown-type or disguised file, or an
    /// item that is not a FILE item; the errors of [`App::save_form`].
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_file_value(
        &self,
        who: &Principal,
        study_oid: &str,
        participant: &str,
        event_oid: &str,
        repeat_key: i32,
        form_oid: &str,
        item: &str,
        row: u32,
        expected_version: Option<i64>,
        file_name: &str,
        bytes: &[u8],
    ) -> Result<SavedForm, AppError> {
        let loc = self.locate_form(who, study_oid, participant, event_oid, repeat_key, form_oid).await?;
        let form = loc.design.form(form_oid).ok_or(AppError::NotFound("form"))?;
        let def = form
            .versions
            .iter()
            .rev()
            .find_map(|v| v.items.iter().find(|i| i.oid.as_str() == item || i.name == item))
            .ok_or_else(|| AppError::invalid("item", format!("form {form_oid} has no item {item}")))?;
        if def.data_type != DataType::File {
            return Err(AppError::invalid("item", format!("{} is not a file item", def.oid)));
        }
        let name = file_name.rsplit(['/', '\\']).next().unwrap_or("").trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(AppError::invalid("file_name", "give the file's name (at most 200 characters)"));
        }
        if bytes.is_empty() {
            return Err(AppError::invalid("file", "the file is empty"));
        }
        if bytes.len() > MAX_FILE_BYTES {
            return Err(AppError::invalid(
                "file",
                format!("the file is {} bytes; the limit is {MAX_FILE_BYTES}", bytes.len()),
            ));
        }
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
        let Some((_, content_type, magic)) = TYPES.iter().find(|(e, _, _)| *e == ext) else {
            let allowed: Vec<&str> = TYPES.iter().map(|(e, _, _)| *e).collect();
            return Err(AppError::invalid(
                "file_name",
                format!("'.{ext}' files are not accepted (accepted: {})", allowed.join(", ")),
            ));
        };
        if !content_ok(&ext, *magic, bytes) {
            return Err(AppError::invalid("file", format!("the content of {name} is not a .{ext} file")));
        }
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let mut tx = self.store().write(who.actor()).await?;
        let id = tx.insert_stored_file(loc.study.id, loc.participant.id, name, content_type, &sha, bytes).await?;
        tx.audit(
            AuditEntry::new("file.uploaded", "stored_file", format!("{}/files/{id}", loc.participant.oid))
                .study(Some(loc.study.id), loc.site_id)
                .new_value(serde_json::json!({ "file_name": name, "content_type": content_type, "size": bytes.len(), "sha256": sha, "item": def.oid.as_str() })),
        )
        .await?;
        tx.commit().await?;
        let input = SaveFormInput {
            expected_version,
            form_version: None,
            values: vec![ValueInput {
                item: def.oid.to_string(),
                row,
                value: Some(format!("files/{id}/{name}")),
                null_flavour: None,
            }],
            remove_rows: vec![],
            notes: vec![],
        };
        self.save_form(who, study_oid, participant, event_oid, repeat_key, form_oid, input).await
    }

    /// A stored file, for someone who may see its participant.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when the file does not exist in the study or its participant is at
    /// a site the user does not see.
    pub async fn download_file(
        &self,
        who: &Principal,
        study_oid: &str,
        id: i64,
    ) -> Result<(FileInfo, Vec<u8>), AppError> {
        let (study, _) = self.study_with_access(who, study_oid).await?;
        let f =
            self.store().stored_file(id).await?.filter(|f| f.study_id == study.id).ok_or(AppError::NotFound("file"))?;
        let p = self.store().participant_by_id(f.participant_id).await?.ok_or(AppError::NotFound("file"))?;
        self.visible_participant(who, study_oid, &p.oid).await.map_err(|_| AppError::NotFound("file"))?;
        let content = self.store().stored_file_content(id).await?.ok_or(AppError::NotFound("file"))?;
        Ok((
            FileInfo {
                id: f.id,
                file_name: f.file_name,
                content_type: f.content_type,
                size_bytes: f.size_bytes,
                sha256: f.sha256,
            },
            content,
        ))
    }
}
