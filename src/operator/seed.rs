//! A restart reads what it reported before: findings of reports made by this analyzer version go
//! back into the image cache, statuses into the written statuses, so a restart downloads and
//! writes nothing that is already reported.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ListParams};

use super::OperatorError;
use super::analyze::{any_platform_key, image_key};
use super::context::{Context, report_key};
use crate::analysis::ANALYZER_VERSION;
use crate::registry::{Platform, Reference};
use crate::report::ImageFindings;
use crate::report::crd::ImageReport;

/// The first wait after the API server could not be reached at start; doubled up to
/// [`SEED_RETRY_MAX`].
const SEED_RETRY_FIRST: Duration = Duration::from_millis(500);
const SEED_RETRY_MAX: Duration = Duration::from_secs(30);

/// Seeds the caches from every existing report in the watched namespaces. An API server that
/// cannot be reached or answers 429/5xx (restarting, overloaded) is waited for, with backoff,
/// while the operator is not ready: a start that races a control-plane restart must not end the
/// process. Any other answer (403: RBAC; 404: no CRD) stops it with that error.
pub async fn seed_from_reports(ctx: &Context) -> Result<(), OperatorError> {
    let mut wait = SEED_RETRY_FIRST;
    let reports = loop {
        match list_reports(&ctx.client, &ctx.config.namespaces).await {
            Ok(reports) => break reports,
            Err(e) if transient(&e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "cannot read existing reports yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(SEED_RETRY_MAX);
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut seeded = 0;
    for report in &reports {
        let Some(status) = &report.status else {
            continue;
        };
        for findings in status.containers.iter().filter_map(|c| c.findings.as_ref()) {
            seeded += remember_findings(ctx, findings);
        }
        if let Some(namespace) = &report.metadata.namespace {
            let w = &report.spec.workload;
            ctx.written
                .insert(report_key(namespace, &w.kind, &w.uid), status.clone());
        }
    }
    tracing::info!(
        reports = reports.len(),
        images = seeded,
        "seeded from existing reports"
    );
    Ok(())
}

/// Files a report's findings under every key a reconcile may look for them by (the manifest's
/// and the index's digest; any platform for a single-platform manifest); returns how many
/// platform keys. Findings of another analyzer version, or unreadable ones, are skipped.
fn remember_findings(ctx: &Context, f: &ImageFindings) -> usize {
    if f.analyzer_version != ANALYZER_VERSION {
        return 0;
    }
    let (Ok(reference), Ok(platform)) =
        (f.image.parse::<Reference>(), f.platform.parse::<Platform>())
    else {
        return 0;
    };
    let at = |digest: &String| {
        Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            digest.clone(),
        )
    };
    let findings = Arc::new(f.clone());
    if f.index_digest.is_none() {
        ctx.images
            .remember(any_platform_key(&at(&f.digest)), findings.clone());
    }
    let digests = std::iter::once(&f.digest).chain(f.index_digest.as_ref());
    digests
        .map(|digest| {
            ctx.images
                .remember(image_key(&at(digest), &platform), findings.clone())
        })
        .count()
}

/// Reports listed per request at start: a cluster with many reports is read in pages, never in
/// one response the API server must build whole.
const LIST_PAGE: u32 = 500;

/// The existing reports in `namespaces` (all namespaces when empty), listed page by page.
/// Errors worth waiting out: no connection, or the API server asking to come back later.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::Service(_) | kube::Error::HyperError(_) => true,
        _ => false,
    }
}

pub async fn list_reports(
    client: &Client,
    namespaces: &[String],
) -> Result<Vec<ImageReport>, kube::Error> {
    if namespaces.is_empty() {
        return list_pages(&Api::all(client.clone())).await;
    }
    let mut out = Vec::new();
    for ns in namespaces {
        out.extend(list_pages(&Api::namespaced(client.clone(), ns)).await?);
    }
    Ok(out)
}

async fn list_pages(api: &Api<ImageReport>) -> Result<Vec<ImageReport>, kube::Error> {
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(LIST_PAGE);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transient;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("an answer", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn only_an_overloaded_or_restarting_api_server_is_waited_for_at_start() {
        for code in [429, 500, 503, 504] {
            assert!(transient(&status(code)), "{code}");
        }
        for code in [401, 403, 404, 410] {
            assert!(!transient(&status(code)), "{code}");
        }
    }
}
