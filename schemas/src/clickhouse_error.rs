//! What a ClickHouse error says, read off its text: the exception code and whether waiting
//! can help. Shared by the engine (retry or stop) and the query gateway (what to tell a user).
//!
//! Codes are ClickHouse's `ErrorCodes.cpp`; the server prefixes every exception with
//! `Code: N` (`Code: 53, e.displayText() = ...` on 18.16, `Code: 53. DB::Exception: ...` on
//! current servers).

/// The exception code at the start of a server error text.
pub fn exception_code(text: &str) -> Option<u32> {
    let rest = text.trim_start().strip_prefix("Code: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Exceptions that the same request will meet again however long one waits: the schema or
/// the data does not fit the table (a type mismatch, an unknown column or table), or the
/// credentials are refused. Anything else a server says (too many parts, memory limits,
/// timeouts, a replica going away, codes added later) may pass, so it is retried.
pub fn is_permanent_code(code: u32) -> bool {
    matches!(
        code,
        6     // CANNOT_PARSE_TEXT
        | 8   // THERE_IS_NO_COLUMN
        | 10  // NOT_FOUND_COLUMN_IN_BLOCK
        | 16  // NO_SUCH_COLUMN_IN_TABLE
        | 27  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
        | 33  // CANNOT_READ_ALL_DATA (a row shorter than the table's columns)
        | 43  // ILLEGAL_TYPE_OF_ARGUMENT
        | 44  // ILLEGAL_COLUMN
        | 47  // UNKNOWN_IDENTIFIER
        | 53  // TYPE_MISMATCH
        | 60  // UNKNOWN_TABLE
        | 62  // SYNTAX_ERROR
        | 70  // CANNOT_CONVERT_TYPE
        | 81  // UNKNOWN_DATABASE
        | 117 // INCORRECT_DATA
        | 164 // READONLY
        | 192 // UNKNOWN_USER
        | 193 // WRONG_PASSWORD
        | 194 // REQUIRED_PASSWORD
        | 497 // ACCESS_DENIED
        | 516 // AUTHENTICATION_FAILED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_old_and_new_servers() {
        let old = "Code: 16, e.displayText() = DB::Exception: No such column nope in table";
        let new = "Code: 53. DB::Exception: Type mismatch in IN or VALUES section";
        assert_eq!(exception_code(old), Some(16));
        assert_eq!(exception_code(new), Some(53));
        assert_eq!(exception_code("bad gateway"), None);
        assert!(is_permanent_code(16) && is_permanent_code(53));
        assert!(!is_permanent_code(252), "TOO_MANY_PARTS passes");
        assert!(!is_permanent_code(241), "MEMORY_LIMIT_EXCEEDED passes");
    }
}
