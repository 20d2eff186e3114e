//! The site: the server-rendered page and the static files the build
//! wrote (the WASM, its JS and CSS, the icon).

use axum::http::{header, HeaderValue, StatusCode};
use axum::routing::get;
use axum::Router;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use std::net::SocketAddr;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// The page (server-rendered Leptos app) for `/` and `/r/<room>`, and the
/// site's files.
pub fn routes(site_root: &str, addr: SocketAddr) -> Router {
    let options = leptos_options(site_root, addr);
    // Rendering a page spawns tasks on Leptos's executor: tokio. (An error
    // only says it was set already: the tests start several servers.)
    let _ = any_spawner::Executor::init_tokio();
    // The chat page for `/` and `/r/<room>`; the page itself reads its room
    // from the URL.
    let page = leptos_axum::render_app_to_stream_with_context(
        {
            let options = options.clone();
            move || provide_context(options.clone())
        },
        {
            let options = options.clone();
            move || app::shell(options.clone())
        },
    );
    // Pages change with every release: always revalidated.
    let no_cache = SetResponseHeaderLayer::overriding(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    Router::new()
        .route("/", get(page.clone()))
        .route("/r/{room}", get(page))
        .layer(no_cache)
        // The pages are rendered per request: compressed on the way out.
        .layer(CompressionLayer::new())
        // Not under the pages' layers: the build compressed them, and they
        // carry their own cache policy.
        .nest_service("/pkg", static_files(&options))
        // The site's other files (the icon); anything else is not found.
        .fallback_service(
            ServeDir::new(options.site_root.as_ref()).not_found_service(get(not_found)),
        )
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "Page not found.")
}

/// The WASM, JS and CSS: the build's brotli or gzip copy when the browser
/// takes it (`scripts/build.sh` writes them), and
/// cached for a year when their names carry a content hash.
fn static_files(options: &LeptosOptions) -> Router {
    let dir = std::path::Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref());
    let cache = if options.hash_files {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Router::new()
        .fallback_service(ServeDir::new(dir).precompressed_br().precompressed_gzip())
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache),
        ))
}

/// Under `cargo leptos watch` the Leptos settings (live-reload port, ...)
/// come from its environment; a plain run uses the built site's layout.
fn leptos_options(site_root: &str, addr: SocketAddr) -> LeptosOptions {
    let from_cargo_leptos = std::env::var_os("LEPTOS_OUTPUT_NAME")
        .and_then(|_| leptos::config::get_configuration(None).ok())
        .map(|conf| conf.leptos_options);
    let mut options =
        from_cargo_leptos.unwrap_or_else(|| LeptosOptions::builder().output_name("chat").build());
    options.site_root = site_root.into();
    options.site_addr = addr;
    // A release build names its files with their hashes, listed in a file
    // next to the binary; pages must then link those names.
    let hashes = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(options.hash_file.as_ref())));
    options.hash_files = hashes.is_some_and(|file| file.exists());
    let plain_js = std::path::Path::new(options.site_root.as_ref())
        .join(options.site_pkg_dir.as_ref())
        .join(format!("{}.js", options.output_name));
    if !options.hash_files && !plain_js.exists() {
        tracing::warn!(
            site = %options.site_root,
            "no {} next to the server binary, and no unhashed files in the site: \
             pages will not load their script; copy the build's hash file along with the binary",
            options.hash_file
        );
    }
    options
}
