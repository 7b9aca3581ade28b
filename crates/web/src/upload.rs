//! Import files arrive as a request body, raw or as the `file` part of a multipart form (as
//! OpenClinica 4 scripts send them), of any size up to `http.import_limit_bytes`. They are
//! written to a temporary file as they arrive and imported from there, so a file of any size
//! needs the memory of one chunk; the file is deleted when the import is done with it.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;
use casebook_app::AppError;
use casebook_app::import::ImportSource;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::AppState;

/// An upload spooled to disk, and the file name the client gave (multipart).
pub(crate) struct Upload {
    pub source: ImportSource,
    pub file_name: Option<String>,
}

/// Writes the request's file to a temporary file: the multipart part named `file` (or the first
/// part with a file name), else the whole body.
pub(crate) async fn spool(state: &AppState, req: Request) -> Result<Upload, AppError> {
    let limit = state.web.import_limit_bytes;
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    if !multipart {
        let source = write_stream(req.into_body().into_data_stream(), limit).await?;
        return Ok(Upload { source, file_name: None });
    }
    let mut form = Multipart::from_request(req, state)
        .await
        .map_err(|e| AppError::invalid("file", format!("the multipart form cannot be read: {}", e.body_text())))?;
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| AppError::invalid("file", format!("the multipart form cannot be read: {}", e.body_text())))?;
        let Some(field) = field else {
            return Err(AppError::invalid("file", "the multipart form has no part named 'file'"));
        };
        if field.name() == Some("file") || field.file_name().is_some() {
            let file_name = field.file_name().map(str::to_owned);
            let source = write_stream(field, limit).await?;
            return Ok(Upload { source, file_name });
        }
    }
}

/// Writes a stream of chunks to a new temporary file, refusing more than `limit` bytes.
async fn write_stream<S, B, E>(mut stream: S, limit: u64) -> Result<ImportSource, AppError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let path = std::env::temp_dir().join(format!("casebook-import-{}.xml", uuid::Uuid::new_v4()));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(|e| casebook_app::anyhow_like::msg(format!("creating {}: {e}", path.display())))?;
    // From here the source owns the file: every early return deletes it.
    let source = ImportSource::file(path.clone(), true);
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AppError::invalid("file", format!("the upload broke off: {e}")))?;
        let bytes = chunk.as_ref();
        written += bytes.len() as u64;
        if written > limit {
            return Err(AppError::Rejected {
                code: "file_too_large",
                message: format!(
                    "the file is larger than the import limit of {limit} bytes (setting http.import_limit_bytes)"
                ),
                details: serde_json::json!({ "limit_bytes": limit }),
            });
        }
        file.write_all(bytes)
            .await
            .map_err(|e| casebook_app::anyhow_like::msg(format!("writing {}: {e}", path.display())))?;
    }
    file.flush().await.map_err(|e| casebook_app::anyhow_like::msg(format!("writing {}: {e}", path.display())))?;
    Ok(source)
}
