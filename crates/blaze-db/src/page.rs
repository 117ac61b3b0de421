//! Cursor pagination. A page token is an opaque base64 of the sort key of the
//! last row returned; `page_size == 0` means "everything" (the client's HTTP
//! routes return full lists).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use blaze_kit::ApiError;

pub const MAX_PAGE: i64 = 1000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageRequest {
    /// Rows to return (capped); 0 = all.
    pub size: i64,
    /// Sort key of the last row of the previous page.
    pub after: Option<String>,
}

impl PageRequest {
    pub fn new(size: i32, token: &str) -> Result<PageRequest, ApiError> {
        let after = if token.is_empty() {
            None
        } else {
            let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| ApiError::invalid("Invalid page token"))?;
            Some(String::from_utf8(bytes).map_err(|_| ApiError::invalid("Invalid page token"))?)
        };
        let size = if size <= 0 { 0 } else { i64::from(size).min(MAX_PAGE) };
        Ok(PageRequest { size, after })
    }

    /// SQL LIMIT value: one more than the page to detect a next page.
    pub fn limit(&self) -> i64 {
        if self.size == 0 { i64::MAX } else { self.size + 1 }
    }

    /// Trim the extra row and produce the next token from the last row's key.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        if self.size > 0 && rows.len() as i64 > self.size {
            rows.truncate(self.size as usize);
            let token = rows.last().map(|r| URL_SAFE_NO_PAD.encode(key(r))).unwrap_or_default();
            (rows, token)
        } else {
            (rows, String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_their_cursor() {
        let p = PageRequest::new(2, "").unwrap();
        let (rows, token) = p.finish(vec![1, 2, 3], |r| r.to_string());
        assert_eq!(rows, vec![1, 2]);
        let next = PageRequest::new(2, &token).unwrap();
        assert_eq!(next.after.as_deref(), Some("2"));
        let (rows, token) = next.finish(vec![3], |r| r.to_string());
        assert_eq!((rows, token), (vec![3], String::new()));
        assert!(PageRequest::new(1, "%%%").is_err());
        assert_eq!(PageRequest::new(0, "").unwrap().limit(), i64::MAX);
    }
}
