#include "np/internal/text.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace np::internal {
namespace {

// The character at the start of `s` as Go's utf8.DecodeRune accepts it (no overlong forms,
// no surrogates, nothing above U+10FFFF): its length, or 0 when the first byte does not start
// valid UTF-8. `s` must not be empty.
int DecodeUtf8(absl::string_view s, uint32_t* cp) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](size_t i) { return i < s.size() && (byte(i) & 0xc0) == 0x80; };
  const unsigned char b = byte(0);
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  int n = 0;
  if (b >= 0xc2 && b <= 0xdf) {
    n = 2;
    *cp = b & 0x1f;
  } else if (b >= 0xe0 && b <= 0xef) {
    if (cont(1) && ((b == 0xe0 && byte(1) < 0xa0) || (b == 0xed && byte(1) >= 0xa0))) return 0;
    n = 3;
    *cp = b & 0x0f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    if (cont(1) && ((b == 0xf0 && byte(1) < 0x90) || (b == 0xf4 && byte(1) >= 0x90))) return 0;
    n = 4;
    *cp = b & 0x07;
  } else {
    return 0;
  }
  for (int i = 1; i < n; ++i) {
    if (!cont(i)) return 0;
    *cp = (*cp << 6) | (byte(i) & 0x3f);
  }
  return n;
}

// Go's unicode.IsPrint for the characters that change how a line reads (see the header).
bool IsPrintable(uint32_t cp) {
  if (cp < 0x20 || cp == 0x7f) return false;                     // C0 controls, DEL
  if (cp >= 0x80 && cp <= 0xa0) return false;                    // C1 controls, NBSP
  if (cp == 0xad || cp == 0x061c || cp == 0x180e) return false;  // soft hyphen, marks
  if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x202f || cp == 0x205f ||
      cp == 0x3000) {
    return false;  // spaces other than ASCII space
  }
  if (cp >= 0x200b && cp <= 0x200f) return false;  // zero-width, LRM, RLM
  if (cp >= 0x2028 && cp <= 0x202e) return false;                // separators, embeddings
  if (cp >= 0x2060 && cp <= 0x206f) return false;                // joiners, isolates
  if (cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb)) return false;
  if (cp == 0xfffe || cp == 0xffff) return false;
  if (cp >= 0xe0000 && cp <= 0xe007f) return false;  // tag characters
  return true;
}

// Appends `s`, escaping what is not printable; `quote_too` also escapes '"' and '\\'.
void AppendEscaped(absl::string_view s, bool quote_too, std::string* out) {
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    const int n = DecodeUtf8(s.substr(i), &cp);
    if (n == 0) {
      absl::StrAppendFormat(out, "\\x%02x", static_cast<unsigned char>(s[i]));
      ++i;
      continue;
    }
    const absl::string_view original = s.substr(i, n);
    i += n;
    if (quote_too && (cp == '"' || cp == '\\')) {
      out->push_back('\\');
      out->push_back(static_cast<char>(cp));
      continue;
    }
    if (IsPrintable(cp)) {
      out->append(original.data(), original.size());
      continue;
    }
    switch (cp) {
      case '\a': *out += "\\a"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\v': *out += "\\v"; break;
      default:
        if (cp < 0x80) {
          absl::StrAppendFormat(out, "\\x%02x", cp);
        } else if (cp < 0x10000) {
          absl::StrAppendFormat(out, "\\u%04x", cp);
        } else {
          absl::StrAppendFormat(out, "\\U%08x", cp);
        }
    }
  }
}

// True when DisplayText may print `s` as it is.
bool IsPlain(absl::string_view s) {
  if (s.empty()) return true;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    const int n = DecodeUtf8(s.substr(i), &cp);
    if (n == 0 || !IsPrintable(cp) || cp == ' ' || cp == '"' || cp == '\\') return false;
    i += n;
  }
  return true;
}

// The longest prefix of `s` of at most `max` bytes that does not end inside a character.
absl::string_view PrefixAtCharacter(absl::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xc0) == 0x80) --end;
  return s.substr(0, end);
}

// The longest suffix of `s` of at most `max` bytes that does not start inside a character.
absl::string_view SuffixAtCharacter(absl::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t start = s.size() - max;
  while (start < s.size() && (static_cast<unsigned char>(s[start]) & 0xc0) == 0x80) ++start;
  return s.substr(start);
}

}  // namespace

std::string GoQuote(absl::string_view s) {
  std::string out = "\"";
  AppendEscaped(s, /*quote_too=*/true, &out);
  out += "\"";
  return out;
}

std::string DisplayText(absl::string_view s) {
  if (s.size() > kMaxDisplayBytes) {
    return absl::StrCat(GoQuote(PrefixAtCharacter(s, kMaxDisplayBytes / 2)), "...",
                        GoQuote(SuffixAtCharacter(s, kMaxDisplayBytes / 4)), " (", s.size(),
                        " bytes)");
  }
  return IsPlain(s) ? std::string(s) : GoQuote(s);
}

std::string EscapeUnprintable(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  AppendEscaped(s, /*quote_too=*/false, &out);
  return out;
}

}  // namespace np::internal
