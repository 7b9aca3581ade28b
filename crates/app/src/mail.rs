//! Delivery of the notification outbox over SMTP.
//!
//! Notes queue their e-mails in the `outbox` table in the transaction that writes them; a
//! background job (`casebook serve`) hands queued messages to the configured mail relay. Without
//! a relay nothing is sent and nothing is lost: the messages stay queued and readable. A message
//! that fails is retried on the next run until `max_attempts`, then marked failed with the
//! server's last answer. The client speaks plain SMTP (RFC 5321) to a relay on a trusted network
//! (the usual local MTA or smarthost); TLS and authentication are the relay's business.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::{App, AppError};

/// Where and how to send notification e-mails.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// The SMTP relay host; empty: keep messages queued.
    pub smtp_host: String,
    pub smtp_port: u16,
    /// The sender address.
    pub from: String,
    /// The name this server gives in `EHLO`.
    pub helo: String,
    /// How often queued messages are handed over.
    pub interval_seconds: u64,
    /// Attempts before a message is marked failed.
    pub max_attempts: i32,
    /// Seconds to wait for the relay at each step.
    pub timeout_seconds: u64,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            smtp_host: String::new(),
            smtp_port: 25,
            from: "casebook@localhost".into(),
            helo: "casebook".into(),
            interval_seconds: 30,
            max_attempts: 5,
            timeout_seconds: 20,
        }
    }
}

impl MailSettings {
    /// # Errors
    /// A message naming the setting that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=86_400).contains(&self.interval_seconds) {
            return Err(format!("mail.interval_seconds must be between 1 and 86400 (got {})", self.interval_seconds));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(format!("mail.max_attempts must be between 1 and 100 (got {})", self.max_attempts));
        }
        if !(1..=600).contains(&self.timeout_seconds) {
            return Err(format!("mail.timeout_seconds must be between 1 and 600 (got {})", self.timeout_seconds));
        }
        if !self.from.contains('@') || self.from.contains(['\r', '\n', '<', '>']) {
            return Err(format!("mail.from must be an e-mail address (got '{}')", self.from));
        }
        Ok(())
    }
}

/// What one delivery run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    pub sent: usize,
    /// Failed this time, to be retried.
    pub retrying: usize,
    /// Failed for the last time.
    pub failed: usize,
}

impl App {
    /// Hands queued notification e-mails to the SMTP relay (up to 100 per run). Does nothing
    /// when no relay is configured.
    ///
    /// # Errors
    /// Storage failures (a relay failure is recorded on the message, not returned).
    pub async fn deliver_outbox(&self, settings: &MailSettings) -> Result<Delivery, AppError> {
        let mut out = Delivery::default();
        if settings.smtp_host.trim().is_empty() {
            return Ok(out);
        }
        for m in self.store().queued_outbox(100).await? {
            let now = self.store().clock().now();
            let date = now.format(&time::format_description::well_known::Rfc2822).unwrap_or_default();
            let result = send(settings, &m.to_address, &m.subject, &m.body, m.id, &date).await;
            match result {
                Ok(()) => {
                    self.store().outbox_sent(m.id, now).await?;
                    out.sent += 1;
                }
                Err(e) => {
                    let last = m.attempts + 1 >= settings.max_attempts;
                    tracing::warn!(message = m.id, error = %e, last, "sending a notification failed");
                    self.store().outbox_failed(m.id, &e, last).await?;
                    if last {
                        out.failed += 1;
                    } else {
                        out.retrying += 1;
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Subject text as an RFC 2047 encoded word when it is not plain ASCII.
fn header_text(s: &str) -> String {
    let clean: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    if clean.is_ascii() {
        clean
    } else {
        format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(clean.as_bytes()))
    }
}

/// The message text: headers, a blank line, the body with CRLF line ends and dot-stuffing.
fn message(from: &str, to: &str, subject: &str, body: &str, id: i64, date: &str, helo: &str) -> String {
    let mut m = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <outbox-{id}@{helo}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        header_text(subject)
    );
    for line in body.replace("\r\n", "\n").split('\n') {
        if line.starts_with('.') {
            m.push('.');
        }
        m.push_str(line);
        m.push_str("\r\n");
    }
    m
}

async fn send(settings: &MailSettings, to: &str, subject: &str, body: &str, id: i64, date: &str) -> Result<(), String> {
    if to.contains(['\r', '\n', '<', '>']) || !to.contains('@') {
        return Err(format!("'{to}' is not an e-mail address"));
    }
    let wait = Duration::from_secs(settings.timeout_seconds);
    let step = |what: &'static str| move |_| format!("the relay did not answer {what} in time");
    let addr = format!("{}:{}", settings.smtp_host.trim(), settings.smtp_port);
    let stream = tokio::time::timeout(wait, TcpStream::connect(&addr))
        .await
        .map_err(step("the connection"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut expect = async |code: &str, what: &'static str| -> Result<(), String> {
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(wait, read.read_line(&mut line))
                .await
                .map_err(step(what))?
                .map_err(|e| format!("reading the relay's answer to {what}: {e}"))?;
            if n == 0 {
                return Err(format!("the relay closed the connection after {what}"));
            }
            if line.len() >= 4 && line.as_bytes()[3] == b'-' {
                continue; // a multi-line answer goes on
            }
            return if line.starts_with(code) {
                Ok(())
            } else {
                Err(format!("the relay answered {what} with: {}", line.trim_end()))
            };
        }
    };
    expect("220", "the greeting").await?;
    let mut say = async |text: String| -> Result<(), String> {
        tokio::time::timeout(wait, write.write_all(text.as_bytes()))
            .await
            .map_err(|_| "the relay stopped reading".to_owned())?
            .map_err(|e| format!("writing to the relay: {e}"))
    };
    say(format!("EHLO {}\r\n", settings.helo)).await?;
    expect("250", "EHLO").await?;
    say(format!("MAIL FROM:<{}>\r\n", settings.from)).await?;
    expect("250", "MAIL FROM").await?;
    say(format!("RCPT TO:<{to}>\r\n")).await?;
    expect("250", "RCPT TO").await?;
    say("DATA\r\n".to_owned()).await?;
    expect("354", "DATA").await?;
    let text = message(&settings.from, to, subject, body, id, date, &settings.helo);
    say(format!("{text}.\r\n")).await?;
    expect("250", "the message").await?;
    say("QUIT\r\n".to_owned()).await?;
    Ok(())
}
