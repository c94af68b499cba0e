// np/internal/text.h — how np writes text that came from the input (names, keys, values,
// file names) into messages, so that no input can break a line, forge one, or drive a
// terminal. Internal to np; np/cluster.h's Diagnostic::ToString is the public face of it.
//
//   std::string m = absl::StrCat("Invalid value: ", np::internal::GoQuote(value));
//   std::string name = np::internal::DisplayText(object_name);  // raw when plain, else quoted
//
// The escape is Go's strconv.Quote (what `%q` prints, and what the API server's messages use):
// \a \b \f \n \r \t \v \\ \", \xNN for control bytes and bytes that are not UTF-8, \uNNNN or
// \UNNNNNNNN for characters that are not printable. "Not printable" here is Go's
// unicode.IsPrint for the characters that matter on one line: C0 and C1 controls, DEL, spaces
// other than ASCII space, line and paragraph separators, bidirectional and zero-width format
// characters, the byte-order mark, tag characters and U+FFFE/U+FFFF; every other valid
// character passes through.
//
// Thread safety: pure functions.
#ifndef NP_INTERNAL_TEXT_H_
#define NP_INTERNAL_TEXT_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace np::internal {

// Longest text DisplayText() prints whole; longer text is cut in the middle.
inline constexpr size_t kMaxDisplayBytes = 256;

// `s` in double quotes, escaped as Go's strconv.Quote escapes it.
std::string GoQuote(absl::string_view s);

// `s` for a name-like slot of a message (object, kind, field path, file name): as it is when
// every character is printable and neither a space, a quote nor a backslash; else GoQuote(s).
// Longer than kMaxDisplayBytes: the start and the end, quoted, with the length, e.g.
// "aaaa"..."aaaa" (100000 bytes).
std::string DisplayText(absl::string_view s);

// `s` with only the characters escaped that are not printable (as GoQuote escapes them);
// quotes and backslashes stay. For sentences that already quote their values.
std::string EscapeUnprintable(absl::string_view s);

}  // namespace np::internal

#endif  // NP_INTERNAL_TEXT_H_
