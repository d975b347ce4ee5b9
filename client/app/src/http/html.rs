//! The HTML pages, for people: the wiki index, a page with its edit form, its history.
//! Errors are answered as plain text with the same status codes as the JSON API.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::wiki;

/// An [`ApiError`] answered as text.
pub struct TextError(ApiError);

impl From<ApiError> for TextError {
    fn from(e: ApiError) -> Self {
        TextError(e)
    }
}

impl IntoResponse for TextError {
    fn into_response(self) -> Response {
        self.0.into_text_response()
    }
}

/// `GET /wiki`: every page.
pub async fn index(State(st): State<AppState>) -> Result<Html<String>, TextError> {
    let pages = st.exec(|db| async move { wiki::list(&db).await }).await?;
    let items: String = pages.iter().map(|p| format!("<li><a href=\"/wiki/{0}\">{0}</a></li>\n", escape(p))).collect();
    let body = format!("<h1>Pages</h1>\n<ul>\n{items}</ul>\n<p>To create a page, open <code>/wiki/NewName</code>.</p>");
    Ok(Html(layout("Pages", &body)))
}

/// `GET /wiki/{name}`: the page and an edit form (a creation form if it does not exist yet).
pub async fn page(State(st): State<AppState>, Path(name): Path<String>) -> Result<Response, TextError> {
    let n = name.clone();
    let page = st.exec(|db| async move { wiki::get(&db, &n).await }).await?;
    let name = escape(&name);
    let (status, shown, body, base) = match &page {
        Some(p) => (
            StatusCode::OK,
            format!(
                "<pre>{}</pre>\n<p>revision {} by {} · <a href=\"/wiki/{name}/history\">history</a></p>",
                escape(&p.current.body),
                p.current.revision,
                escape(&p.current.author),
            ),
            escape(&p.current.body),
            p.current.revision,
        ),
        None => (StatusCode::NOT_FOUND, "<p>This page does not exist yet.</p>".to_owned(), String::new(), 0),
    };
    let form = format!(
        "<form method=\"post\" action=\"/wiki/{name}\">\n<textarea name=\"body\" rows=\"12\" cols=\"80\">{body}</textarea><br>\n\
         <input name=\"author\" placeholder=\"your name\">\n<input type=\"hidden\" name=\"base_revision\" value=\"{base}\">\n\
         <button>save</button>\n</form>"
    );
    let html = layout(&name, &format!("<h1>{name}</h1>\n{shown}\n{form}\n<p><a href=\"/wiki\">all pages</a></p>"));
    Ok((status, Html(html)).into_response())
}

/// The edit form's fields.
#[derive(Debug, Deserialize)]
pub struct EditForm {
    body: String,
    #[serde(default)]
    author: String,
    base_revision: Option<i64>,
}

/// `POST /wiki/{name}`: saves the form, then shows the page (303); 409 if someone else saved
/// in between.
pub async fn save(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Form(form): Form<EditForm>,
) -> Result<Redirect, TextError> {
    let n = name.clone();
    st.exec(|db| async move { wiki::put(&db, &n, &form.body, &form.author, form.base_revision).await }).await?;
    Ok(Redirect::to(&format!("/wiki/{name}")))
}

/// `GET /wiki/{name}/history`: every kept revision, newest first.
pub async fn history(State(st): State<AppState>, Path(name): Path<String>) -> Result<Html<String>, TextError> {
    let n = name.clone();
    let revisions = st.exec(|db| async move { wiki::history(&db, &n).await }).await?;
    let revisions = revisions.ok_or_else(|| ApiError::NotFound(format!("no page {name}")))?;
    let name = escape(&name);
    let items: String = revisions
        .iter()
        .rev()
        .map(|r| format!("<h2>revision {} by {}</h2>\n<pre>{}</pre>\n", r.revision, escape(&r.author), escape(&r.body)))
        .collect();
    Ok(Html(layout(&name, &format!("<h1>History of <a href=\"/wiki/{name}\">{name}</a></h1>\n{items}"))))
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title} - zeo-app</title></head>\n<body>\n{body}\n</body></html>\n"
    )
}

/// Escapes text for HTML element content and double-quoted attributes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}
