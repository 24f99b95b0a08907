// Ref: open_clip_torch 3.3.0 src/open_clip/tokenizer.py (vocabulary layout, bytes_to_unicode, BPE);
// huggingface/transformers@v5.24.0 src/transformers/models/clip/tokenization_clip.py (normaliser and
// pre-tokeniser of the reference used by the parity fixtures).
#include "data/clip_tokenizer.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <memory>

#include "core/error.h"

namespace atelier {
namespace {

constexpr std::string_view kSpecials[] = {"<|startoftext|>", "<|endoftext|>"};
constexpr std::string_view kEndOfWord = "</w>";

std::string utf8(UChar32 c) {
  std::string s;
  icu::UnicodeString(c).toUTF8String(s);
  return s;
}

// CLIP's reversible byte -> printable code point table, in vocabulary order: the printable Latin-1 bytes
// map to themselves, the other 68 bytes to U+0100.. in byte order.
std::vector<std::pair<std::uint8_t, UChar32>> byte_symbols() {
  std::vector<std::pair<std::uint8_t, UChar32>> table;
  std::vector<bool> printable(256, false);
  for (int b = 0; b < 256; ++b)
    printable[b] = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  for (int b = 0; b < 256; ++b)
    if (printable[b]) table.emplace_back(static_cast<std::uint8_t>(b), b);
  UChar32 next = 256;
  for (int b = 0; b < 256; ++b)
    if (!printable[b]) table.emplace_back(static_cast<std::uint8_t>(b), next++);
  return table;
}

std::string read_gzip(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail("CLIP vocabulary ", path.string(), ": no such file");
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) fail("CLIP vocabulary ", path.string(), ": cannot open");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> guard(file, gzclose);
  std::string data;
  char buffer[1 << 16];
  for (;;) {
    const int n = gzread(file, buffer, sizeof(buffer));
    if (n < 0) {
      int code = 0;
      const char* msg = gzerror(file, &code);
      fail("CLIP vocabulary ", path.string(), ": not a valid gzip file (", msg ? msg : "zlib error", ")");
    }
    if (n == 0) break;
    data.append(buffer, static_cast<std::size_t>(n));
  }
  return data;
}

// Unicode NFC, whitespace runs -> " ", per-code-point full lowercase mapping.
icu::UnicodeString normalize(std::string_view text) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) fail("CLIP tokenizer: ICU NFC normaliser unavailable (", u_errorName(status), ")");
  icu::UnicodeString src =
      icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  icu::UnicodeString composed = nfc->normalize(src, status);
  if (U_FAILURE(status)) fail("CLIP tokenizer: NFC normalisation failed (", u_errorName(status), ")");
  icu::UnicodeString out;
  bool in_space = false;
  for (int32_t i = 0; i < composed.length();) {
    const UChar32 c = composed.char32At(i);
    i = composed.moveIndex32(i, 1);
    if (u_hasBinaryProperty(c, UCHAR_WHITE_SPACE)) {
      if (!in_space) out.append(static_cast<UChar>(' '));
      in_space = true;
      continue;
    }
    in_space = false;
    icu::UnicodeString lower(c);
    out.append(lower.toLower(icu::Locale::getRoot()));
  }
  return out;
}

const icu::RegexPattern& piece_pattern() {
  static const std::unique_ptr<icu::RegexPattern> pattern = [] {
    UErrorCode status = U_ZERO_ERROR;
    UParseError parse{};
    std::unique_ptr<icu::RegexPattern> p(
        icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(R"('s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}])"
                                                                R"(|[^\p{White_Space}\p{L}\p{N}]+)"),
                                   parse, status));
    if (U_FAILURE(status)) fail("CLIP tokenizer: ICU regex failed to compile (", u_errorName(status), ")");
    return p;
  }();
  return *pattern;
}

}  // namespace

ClipBPETokenizer ClipBPETokenizer::load(const std::filesystem::path& path) {
  const std::string text = read_gzip(path);
  ClipBPETokenizer tok;
  const auto table = byte_symbols();
  for (const auto& [byte, cp] : table) {
    tok.byte_symbol_[byte] = utf8(cp);
    tok.symbol_byte_[utf8(cp)] = byte;
  }
  tok.tokens_.reserve(kVocabSize);
  for (const auto& [byte, _] : table) tok.tokens_.push_back(tok.byte_symbol_[byte]);
  for (const auto& [byte, _] : table) tok.tokens_.push_back(tok.byte_symbol_[byte] + std::string(kEndOfWord));

  // The first line is a header ("#version: 0.2", or the file name before it in CLIP's own file).
  std::size_t pos = text.find('\n'), line_no = 1;
  pos = pos == std::string::npos ? text.size() : pos + 1;
  while (tok.ranks_.size() < kMerges && pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto space = line.find(' ');
    if (space == 0 || space == std::string_view::npos || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos)
      fail("CLIP vocabulary ", path.string(), ": line ", line_no, " is not a merge \"a b\": '",
           std::string(line.substr(0, 80)), "'");
    const std::string key(line);
    if (!tok.ranks_.emplace(key, static_cast<std::int32_t>(tok.ranks_.size())).second)
      fail("CLIP vocabulary ", path.string(), ": line ", line_no, " repeats the merge '", key, "'");
    tok.tokens_.push_back(key.substr(0, space) + key.substr(space + 1));
  }
  if (tok.ranks_.size() < kMerges)
    fail("CLIP vocabulary ", path.string(), ": ", tok.ranks_.size(), " merges, expected at least ", kMerges);
  for (auto s : kSpecials) tok.tokens_.emplace_back(s);
  for (std::size_t id = 0; id < tok.tokens_.size(); ++id)
    tok.ids_.emplace(tok.tokens_[id], static_cast<std::int32_t>(id));
  return tok;
}

void ClipBPETokenizer::bpe(const std::string& piece, std::vector<std::int32_t>& out) const {
  std::vector<std::string> word;  // symbols, the last carrying "</w>"
  word.reserve(piece.size());
  for (unsigned char b : piece) word.push_back(byte_symbol_[b]);
  if (word.empty()) return;
  word.back() += kEndOfWord;
  while (word.size() > 1) {
    std::int32_t best = INT32_MAX;
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = ranks_.find(word[i] + ' ' + word[i + 1]);
      if (it != ranks_.end() && it->second < best) best = it->second, at = i;
    }
    if (best == INT32_MAX) break;
    const std::string first = word[at], second = word[at + 1];
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (std::size_t i = 0; i < word.size(); ++i) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        ++i;
      } else {
        merged.push_back(std::move(word[i]));
      }
    }
    word = std::move(merged);
  }
  for (const auto& symbol : word) {
    auto it = ids_.find(symbol);
    if (it == ids_.end()) fail("CLIP tokenizer: BPE symbol '", symbol, "' is not in the vocabulary");
    out.push_back(it->second);
  }
}

std::vector<std::int32_t> ClipBPETokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> ids;
  auto encode_plain = [&](std::string_view part) {
    if (part.empty()) return;
    const icu::UnicodeString normalized = normalize(part);
    UErrorCode status = U_ZERO_ERROR;
    std::unique_ptr<icu::RegexMatcher> m(piece_pattern().matcher(normalized, status));
    if (U_FAILURE(status)) fail("CLIP tokenizer: ICU matcher failed (", u_errorName(status), ")");
    while (m->find(status) && U_SUCCESS(status)) {
      std::string piece;
      m->group(status).toUTF8String(piece);
      bpe(piece, ids);
    }
    if (U_FAILURE(status)) fail("CLIP tokenizer: ICU regex search failed (", u_errorName(status), ")");
  };
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t next = std::string_view::npos, which = 0;
    for (std::size_t s = 0; s < std::size(kSpecials); ++s) {
      const auto at = text.find(kSpecials[s], pos);
      if (at < next) next = at, which = s;
    }
    encode_plain(text.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos));
    if (next == std::string_view::npos) break;
    ids.push_back(which == 0 ? kStartOfText : kEndOfText);
    pos = next + kSpecials[which].size();
  }
  return ids;
}

std::vector<std::vector<std::int32_t>> ClipBPETokenizer::tokenize(const std::vector<std::string>& texts,
                                                                  std::size_t context_length,
                                                                  std::int32_t pad_id) const {
  if (context_length < 2) fail("CLIP tokenizer: context_length ", context_length, " leaves no room for the specials");
  std::vector<std::vector<std::int32_t>> rows;
  rows.reserve(texts.size());
  for (const auto& text : texts) {
    auto ids = encode(text);
    if (ids.size() > context_length - 2) ids.resize(context_length - 2);
    std::vector<std::int32_t> row;
    row.reserve(context_length);
    row.push_back(kStartOfText);
    row.insert(row.end(), ids.begin(), ids.end());
    row.push_back(kEndOfText);
    row.resize(context_length, pad_id);
    rows.push_back(std::move(row));
  }
  return rows;
}

const std::string& ClipBPETokenizer::token(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size())
    fail("CLIP tokenizer: id ", id, " is outside the vocabulary [0, ", tokens_.size(), ")");
  return tokens_[static_cast<std::size_t>(id)];
}

std::string ClipBPETokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::string out;
  for (auto id : ids) {
    const std::string& t = token(id);
    if (id == kStartOfText || id == kEndOfText) {
      out += t;
      continue;
    }
    std::string_view symbols = t;
    const bool word_end = symbols.ends_with(kEndOfWord);
    if (word_end) symbols.remove_suffix(kEndOfWord.size());
    for (std::size_t i = 0; i < symbols.size();) {
      const std::size_t len = (static_cast<unsigned char>(symbols[i]) < 0x80) ? 1 : 2;  // symbols are < U+0800
      out += static_cast<char>(symbol_byte_.at(std::string(symbols.substr(i, len))));
      i += len;
    }
    if (word_end) out += ' ';
  }
  const auto first = out.find_first_not_of(" \t\n\r\f\v");
  if (first == std::string::npos) return {};
  return out.substr(first, out.find_last_not_of(" \t\n\r\f\v") - first + 1);
}

}  // namespace atelier
