// CLIP's byte-level BPE tokenizer (Radford et al., 2021), the text front end of every Stable Diffusion
// 1.x/2.x text encoder. Token ids equal transformers' CLIPTokenizer on the same vocabulary. (The Shapes
// world's word-level ClipTokenizer is eval/clip.h's.)
//
// Vocabulary (bpe_simple_vocab_16e6.txt.gz, shipped as assets/text/): a header line, then merges
// "a b" by rank. Ids 0-255 are the 256 byte symbols in CLIP's printable-byte order, 256-511 the same with
// "</w>" (end of word), 512.. the first 48,894 merges, then 49406 <|startoftext|>, 49407 <|endoftext|>.
//
// encode(text):
//   1. the literal special tokens "<|startoftext|>" / "<|endoftext|>" (case-sensitive) become their ids;
//   2. the text between them is normalised: Unicode NFC, every whitespace run -> one space, lowercased
//      code point by code point (full case mapping, no context rules: "ΟΔΟΣ" -> "οδοσ");
//   3. pre-tokenised into the matches of 's|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
//      (everything else, i.e. whitespace, is dropped; \s is Unicode White_Space). Special tokens in
//      other letter case are plain text: "<|ENDOFTEXT|>" -> "<|", "endoftext", "|>", as the reference;
//   4. each piece's UTF-8 bytes become byte symbols, "</w>" is appended to the last, and the lowest-
//      ranked adjacent pair is merged until no ranked pair is left.
// No ftfy / HTML-entity cleanup is applied (transformers 5 applies none either).
//
//   auto tok = ClipBPETokenizer::load("assets/text/bpe_simple_vocab_16e6.txt.gz");
//   auto rows = tok.tokenize({"a photo of a cat"});               // SD1: [[49406, 320, ..., 49407, 49407...]]
//   auto sd2 = tok.tokenize({"a photo"}, 77, /*pad_id=*/0);       // SD2 / OpenCLIP pad with 0
//
// The class is immutable after load() and safe to share between threads.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace atelier {

class ClipBPETokenizer {
 public:
  static constexpr std::int32_t kStartOfText = 49406;
  static constexpr std::int32_t kEndOfText = 49407;
  static constexpr std::int32_t kVocabSize = 49408;
  static constexpr std::size_t kMerges = 48894;
  static constexpr std::size_t kContextLength = 77;

  // Reads a gzip-compressed (or plain) merges file. Throws Error naming `path` when it cannot be read,
  // is not valid gzip, or holds fewer than kMerges well-formed merge lines.
  static ClipBPETokenizer load(const std::filesystem::path& path);

  // Token ids of `text` without <|startoftext|> / <|endoftext|> around it. Invalid UTF-8 is read as U+FFFD.
  std::vector<std::int32_t> encode(std::string_view text) const;

  // One row of `context_length` ids per text: <|startoftext|> ids <|endoftext|> pad..., the ids cut to
  // context_length - 2 when longer (the row still ends its text with <|endoftext|>), as transformers'
  // tokenizer(padding="max_length", truncation=True, max_length=context_length). SD1 pads with
  // kEndOfText, SD2/OpenCLIP with 0.
  std::vector<std::vector<std::int32_t>> tokenize(const std::vector<std::string>& texts,
                                                  std::size_t context_length = kContextLength,
                                                  std::int32_t pad_id = kEndOfText) const;

  // Text of `ids`: byte symbols back to bytes, "</w>" to a space, special tokens as their literal text,
  // leading/trailing spaces trimmed. Throws Error on an id outside the vocabulary.
  std::string decode(const std::vector<std::int32_t>& ids) const;

  // The vocabulary entry of `id` in byte-symbol form ("photo</w>", "<|endoftext|>").
  const std::string& token(std::int32_t id) const;

 private:
  ClipBPETokenizer() = default;
  void bpe(const std::string& piece, std::vector<std::int32_t>& out) const;

  std::vector<std::string> tokens_;                            // id -> byte-symbol string
  std::unordered_map<std::string, std::int32_t> ids_;          // byte-symbol string -> id
  std::unordered_map<std::string, std::int32_t> ranks_;        // "a b" -> merge rank
  std::string byte_symbol_[256];                               // byte -> its symbol, UTF-8
  std::unordered_map<std::string, std::uint8_t> symbol_byte_;  // inverse of byte_symbol_
};

}  // namespace atelier
