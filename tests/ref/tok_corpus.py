#!/usr/bin/env python3
"""Write the tokenizer test inputs: tests/tok/{corpus,invalid_utf8,decode_cases}.json, chat/cases.json.

    python3 tests/ref/tok_corpus.py            # writes into tests/tok/ (next to this script's ../tok)
    python3 tests/ref/tok_corpus.py --out DIR

Deterministic: no randomness, no clock, no tokenizer needed (the standard library only). Every
string is written out below (or built by a visible expression), so the corpus can be reviewed here.
The expected ids come from tok_reference.py (Rust `tokenizers`, on the GPU machine), which reads
these three files. See tests/tok/README.md for the formats.
"""
import argparse
import json
import os
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))

NFC = lambda s: unicodedata.normalize("NFC", s)
NFD = lambda s: unicodedata.normalize("NFD", s)

# ---------------------------------------------------------------------------------------------
# The corpus: (category, text). Order is the index used by the expect_*.json files.
# ---------------------------------------------------------------------------------------------
C = []


def add(cat, *texts):
    for t in texts:
        C.append((cat, t))


add("edge", "", " ", "a", "A", ".", "\n")

add("english",
    "Hello world",
    "hello world",
    " Hello world",
    "Hello, world!",
    "HELLO WORLD",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
    "tHe QuIcK bRoWn FoX",
    "It was the best of times, it was the worst of times.",
    "Mr. Smith went to Washington, D.C., on Jan. 3rd (i.e., yesterday), e.g. by train.",
    "state-of-the-art, well-known, self-contained; co-operate",
    "\u201cCurly quotes\u201d and \u2018single ones\u2019 \u2014 em dash \u2013 en dash\u2026",
    "\"Straight quotes\" and 'single ones' -- double hyphen...",
    "What?! Really?? Yes!!! No... (maybe) [perhaps] {certainly} <never>",
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "Supercalifragilisticexpialidocious",
    "Tokenization is the process of splitting text into tokens.",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "iPhone eBay McDonald's O'Reilly MacBook JavaScript",
    "#hashtag @mention $dollar %percent ^caret &amp *star",
    "end of sentence.Start of next,no space;here:there",
    "The year 1999 and the year 2000.",
    )

add("contraction",
    "I'M", "DON'T", "you'LL", "I'm", "don't", "we've", "they'd", "she's", "WE'RE", "It'S",
    "THEY'VE", "HE'D", "You'Re", "wE'vE",
    "'s", "'tis", "rock 'n' roll", "can't've", "O'Neil", "y'all",
    "it\u2019s curly",
    "I 'm spaced", "don't'", "'S'T'RE'VE'M'LL'D",
    "it'\u017f long s",  # U+017F LATIN SMALL LETTER LONG S case-folds to 's'
    "IT'\u212a",  # U+212A KELVIN SIGN (folds to k; not a contraction)
    "I'M NOT SURE IF YOU'LL LIKE IT, BUT WE'D TRY.",
    )

add("code",
    "#include <stdio.h>\n\nint main(void) {\n    printf(\"Hello, world!\\n\");\n    return 0;\n}\n",
    "static int add(int a, int b)\n{\n\tif (a > 0 && b > 0) {\n\t\treturn a + b;\n\t}\n\treturn -1;\n}\n",
    "for (size_t i = 0; i < n; ++i) { buf[i] = (uint8_t)(x >> (8 * i)); }",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "class Foo(Base):\n    def __init__(self, x: int = 42) -> None:\n        super().__init__()\n        self._x = x  # comment\n\n    @property\n    def x(self):\n        return self._x\n",
    "print(f\"{name!r:>10} = {value:.3f}\")",
    "lambda x: [y ** 2 for y in x if y % 2 == 0]",
    "{\n  \"name\": \"infer\",\n  \"version\": [1, 2, 3],\n  \"nested\": {\"ok\": true, \"value\": null},\n  \"pi\": 3.14159\n}",
    "{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\\\"f\"}}",
    "#!/bin/sh\nset -eu\nfor f in *.txt; do\n  grep -c 'foo' \"$f\" | sort -n > /tmp/out 2>&1 || echo \"fail: $?\"\ndone\n",
    "ls -la | awk '{print $9}' && cd ~/src && make -j$(nproc)",
    "all: build\n\nbuild:\n\t$(CC) $(CFLAGS) -o $@ $^\n\n.PHONY: all build\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "fn main() -> Result<(), Box<dyn Error>> { let v: Vec<u32> = (0..10).collect(); Ok(()) }",
    "const f = async (x) => { await fetch(`/api/${x}`); return x ?? null; };",
    "<html>\n<body>\n<div class=\"main\"><b>bold</b> <i>it</i> <table><tr><td>1</td></tr></table></div>\n</body>\n</html>",
    "key: value\nlist:\n  - item1\n  - item2\nnested:\n    deep: true\n",
    "--- a/file.c\n+++ b/file.c\n@@ -1,3 +1,4 @@\n-old line\n+new line\n context\n",
    "| col1 | col2 |\n|------|------|\n| a    | b    |\n",
    "\\begin{equation}\n  E = mc^2 \\quad \\frac{a}{b}\n\\end{equation}",
    "id,name,score\n1,alice,93.5\n2,bob,87\n",
    "if x==1:\n\tpass\nelif x!=2 and y<=3 or z>=4:\n\t\tpass\n",
    "    indented four\n        indented eight\n            indented twelve",
    "\tone tab\n\t\ttwo tabs\n\t\t\tthree tabs",
    "x = a->b; y = *p++; z = arr[i][j]; w = ~mask ^ (1u << 31);",
    "/* block comment */ // line comment\n# python comment\n-- sql comment",
    )

add("cjk",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01",  # 你好，世界！
    "\u6211\u7231\u81ea\u7136\u8bed\u8a00\u5904\u7406\u3002\u673a\u5668\u5b66\u4e60\u5f88\u6709\u8da3\u3002",
    "\u7e41\u9ad4\u4e2d\u6587\u6e2c\u8a66\uff1a\u81fa\u7063\u3001\u9999\u6e2f\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",  # こんにちは世界
    "\u79c1\u306f\u30b3\u30f3\u30d4\u30e5\u30fc\u30bf\u30fc\u304c\u597d\u304d\u3067\u3059\u3002",
    "\u30ab\u30bf\u30ab\u30ca \u3072\u3089\u304c\u306a \u6f22\u5b57",
    "\uff76\uff80\uff76\uff85 \uff8a\uff9d\uff76\uff78",  # half-width katakana
    "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4",  # 안녕하세요 세계
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\ub97c \ud1a0\ud070\ud654\ud569\ub2c8\ub2e4.",
    "\u4e2d\u6587English\u6df7\u5408123\u6570\u5b57",
    "\uff21\uff22\uff23\uff41\uff42\uff43\uff10\uff11\uff12\uff01\uff1f",  # full-width ASCII
    "\U00020000\U0002A6D6\U00020BB7",  # CJK Ext B (4-byte UTF-8)
    "\u300c\u5f15\u7528\u300d\u3010\u62ec\u5f27\u3011\u300a\u4e66\u540d\u300b",
    "\u6771\u4eac\u90fd\u6e0b\u8c37\u533a 1-2-3",
    "\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u306d\u3002\n\u660e\u65e5\u3082\u6674\u308c\u308b\u3067\u3057\u3087\u3046\u3002",
    )

add("script",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",  # Arabic
    "\u0627\u0644\u0644\u064f\u0651\u063a\u064e\u0629\u064f \u0627\u0644\u0652\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u064e\u0651\u0629\u064f",  # with harakat
    "\u0627\u0644\u0639\u062f\u062f \u0661\u0662\u0663 \u0648 456",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",  # Hebrew
    "\u05d1\u05bc\u05b0\u05e8\u05b5\u05d0\u05e9\u05b4\u05c1\u05d9\u05ea",  # Hebrew with niqqud
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",  # Devanagari
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",  # Thai
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07\u0e23\u0e30\u0e2b\u0e27\u0e48\u0e32\u0e07\u0e04\u0e33",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",  # Russian
    "\u0421\u042a\u0415\u0428\u042c \u0416\u0415 \u0415\u0429\u0401 \u042d\u0422\u0418\u0425 \u041c\u042f\u0413\u041a\u0418\u0425 \u0424\u0420\u0410\u041d\u0426\u0423\u0417\u0421\u041a\u0418\u0425 \u0411\u0423\u041b\u041e\u041a",
    "\u0423\u043a\u0440\u0430\u0457\u043d\u0441\u044c\u043a\u0430 \u043c\u043e\u0432\u0430: \u0491\u0454\u0456\u0457",
    "\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5",  # Greek
    "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u1f08\u03c7\u03b9\u03bb\u03bb\u03b5\u03cd\u03c2 \u03c3\u03bf\u03c6\u03af\u03b1\u03c2",
    "\u0532\u0561\u0580\u0565\u0582 \u0561\u0577\u056d\u0561\u0580\u0570",  # Armenian
    "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",  # Georgian
    "\u09b9\u09cd\u09af\u09be\u09b2\u09cb \u09ac\u09bf\u09b6\u09cd\u09ac",  # Bengali
    "\u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd \u0b89\u0bb2\u0b95\u0bae\u0bcd",  # Tamil
    "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",  # Vietnamese (NFC)
    "\u0130stanbul \u0131\u015f\u0131k I\u0131 \u0130i",  # Turkish dotted/dotless i
    "Stra\u00dfe STRASSE \u1e9e",  # German sharp s
    "\u12e8\u12a0\u121b\u122d\u129b \u133d\u1215\u1348\u1275",  # Amharic
    "\u1019\u103c\u1014\u103a\u1019\u102c\u1005\u102c",  # Burmese
    "\u0cb5\u0cbf\u0cb6\u0ccd\u0cb5",  # Kannada
    "\u0f56\u0f7c\u0f51\u0f0b\u0f61\u0f72\u0f42",  # Tibetan
    "\u1780\u1798\u17d2\u1796\u17bb\u1787\u17b6",  # Khmer
    "\u0da2\u0dd3\u0dc0\u0dd2\u0dad\u0dba",  # Sinhala
    "\u16a0\u16a2\u16a6\u16a8\u16b1\u16b2",  # Runic
    "English \u0639\u0631\u0628\u064a \u05e2\u05d1\u05e8\u05d9\u05ea \u0939\u093f\u0928\u094d\u0926\u0940 \u4e2d\u6587 \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u03b5\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    )

add("emoji",
    "\U0001F600",
    "I love \U0001F355 and \U0001F363!",
    "\U0001F600\U0001F603\U0001F604\U0001F601\U0001F606",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",  # family ZWJ
    "\U0001F469\U0001F3FD\u200d\U0001F4BB",  # woman technologist, medium skin tone
    "\U0001F44D\U0001F3FB \U0001F44D\U0001F3FC \U0001F44D\U0001F3FD \U0001F44D\U0001F3FE \U0001F44D\U0001F3FF",
    "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5\U0001F1E9\U0001F1EA\U0001F1EB\U0001F1F7",  # flags
    "\U0001F1FA\U0001F1F8\U0001F1EF",  # odd regional indicators
    "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",  # Scotland (tag chars)
    "\U0001F3F3\ufe0f\u200d\U0001F308",  # rainbow flag
    "1\ufe0f\u20e3 #\ufe0f\u20e3 *\ufe0f\u20e3",  # keycaps
    "\u2764\ufe0f \u2764 \u263a\ufe0f \u263a",  # variation selectors
    "\U0001F9D1\u200d\U0001F91D\u200d\U0001F9D1",
    "\U0001F926\U0001F3FC\u200d\u2642\ufe0f",
    "Done \u2705 Failed \u274c Warning \u26a0\ufe0f",
    "\U0001F680\U0001F680\U0001F680 to the moon",
    "emoji\U0001F60Ainside\U0001F60Awords",
    "\U0001FAE0\U0001FAE8\U0001FAF6\U0001F7F0",  # newer emoji
    "\u00a9\u00ae\u2122 \u2600\u2601\u2602",
    "\U0001F60A" * 12,
    )

# NFC / NFD pairs (Qwen normalizes NFC; Llama and Gemma keep the bytes)
for s in ["caf\u00e9", "na\u00efve r\u00e9sum\u00e9", "\u00c5ngstr\u00f6m", "Ti\u1ebfng Vi\u1ec7t",
          "\u00f1and\u00fa se\u00f1or", "\ud55c\uad6d\uc5b4", "\u1e69\u1e0b\u0323\u0307",
          "Z\u00fcrich \u00d6sterreich \u00c4rger"]:
    add("combining", NFC(s), NFD(s))
add("combining",
    "e\u0301",  # NFD-only
    "\u0301abc",  # combining mark first
    "a\u0301\u0323\u0308\u0304",  # stacked marks (canonical reordering under NFC)
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334",  # zalgo
    "\u212b \u2126 \u212a",  # Angstrom, Ohm, Kelvin signs (NFC maps to letters)
    "\u0958\u0959 \u0915\u093c",  # Devanagari composition exclusions
    "\ufb01 \ufb02 \u2460 \u00bd \u00b2",  # compatibility characters (NFC keeps them)
    "\u1100\u1161\u11a8",  # conjoining jamo (NFC composes to 각)
    )

add("whitespace",
    "  ", "   ", "\t", "\n\n", "\n\n\n", "\r\n", "\r", " \n", "\n ", "\t\n",
    "   leading spaces",
    "trailing spaces   ",
    "  both sides  ",
    "a b", "a  b", "a   b", "a    b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a\r\nb", "a \nb", "a\n b",
    "line1\r\nline2\r\nline3\r\n",
    "\n\nleading newlines",
    "trailing newline\n",
    "trailing newlines\n\n\n",
    " \n \n \n",
    "\n \t\r\n  x \t \n",
    "word \n\n  \tword",
    "word\t \t word",
    "space before punctuation ! ? . ,",
    " " * 20,
    "x" + " " * 64 + "y",
    "\n" * 31,
    "\n" * 40,
    "\t" * 35,
    "a\u00a0b \u00a0 nbsp",
    "a\u3000b\u3000\u3000c",  # ideographic space
    "em\u2003space thin\u2009space hair\u200aspace nnbsp\u202fx",
    "\u0085NEL\u2028LS\u2029PS\u1680ogham\u205fmmsp",
    "zero\u200bwidth\u200cnon\u200djoiner\u2060wj",
    "\ufeffBOM at start",
    "\u00adsoft\u00adhyphen",
    "\x0bvertical\x0ctab and form feed\x1c\x1d\x1e\x1f",
    "\u200fRTL mark\u200e LTR mark \u202eoverride\u202c",
    "\u2581 lower one eighth block \u2581\u2581 and \u2581\u2581\u2581x",  # Gemma's ▁ literally
    )

add("digits", *["12345678901234567890"[:n] for n in range(1, 21)])
add("digits",
    "0", "00", "007", "1000", "99999", "3.14159", "-42", "+1 (555) 123-4567", "1,000,000",
    "1e-10", "0x1F 0b1010 0o777", "2024-07-26", "12:34:56.789", "v1.2.3", "10km", "H2O",
    "COVID19", "abc123def", "x1y22z333w4444", "ab12cd3456ef7890gh12345678901",
    "\u0661\u0662\u0663\u0664\u0665",  # Arabic-Indic digits
    "\u0967\u0968\u0969",  # Devanagari digits
    "\uff11\uff12\uff13\uff14",  # full-width digits
    "\u2162 \u216b \u2160\u2161\u2162",  # Roman numerals (Nl)
    "\u00bd \u00b2 \u00b3 \u2153",  # No
    "\U0001D7CE\U0001D7CF\U0001D7D0",  # mathematical bold digits
    "123abc456def7890",
    "1 22 333 4444 55555 666666",
    "$1,234.56 \u20ac99,99 \u00a5500",
    )

add("url",
    "https://huggingface.co/docs/tokenizers/index?lang=en&page=2#section-3",
    "http://example.com:8080/path/to/file.html",
    "mailto:john.doe+tag@example.org",
    "ftp://user:pass@192.168.0.1/~home/file.tar.gz",
    "C:\\Users\\Admin\\Documents\\file (1).txt",
    "/usr/local/lib/python3.12/site-packages/__init__.py",
    "https://\u4f8b\u3048.\u30c6\u30b9\u30c8/\u30d1\u30b9?q=%E2%82%AC%20x",
    "[link text](https://example.com/a_b-c.d?e=f) <https://x.y/z>",
    "www.example.co.uk/index.php?id=123&sort=desc",
    )

add("math",
    "\u2211_{i=1}^{n} i\u00b2 = n(n+1)(2n+1)/6",
    "\u2200x\u2208\u211d: x\u00b2 \u2265 0",
    "\u03b1 + \u03b2 = \u03b3, \u0394E = h\u03bd",
    "\u221a2 \u2248 1.41421356",
    "\u222b\u2080^\u221e e^{-x} dx = 1",
    "a \u2260 b \u2264 c \u2265 d \u00b1 \u221e",
    "\u2192 \u21d2 \u27f9 \u2194 \u21a6 \u2218",
    "1/2 + 1/3 = 5/6; 2^10 = 1024; 7 % 3 = 1",
    "!= == <= >= && || << >> -> => :: ... ?? ?. +=",
    "\U0001D400\U0001D401\U0001D402 \U0001D538\U0001D539 \u2115\u2124\u211a\u211d\u2102",
    "f(x) = \u2202\u00b2u/\u2202t\u00b2 \u2212 c\u00b2\u2207\u00b2u",
    )

add("special",
    "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    "<bos>Hello",
    "text <bos> text",
    "<bos><bos>",
    "<eos><pad><unk><mask>",
    "<start_of_image><image_soft_token><end_of_image>",
    "<unused0> <unused99>",
    "<b>bold</b> <table><tr><td>x</td></tr></table>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<|endoftext|>",
    "before<|im_end|>after",
    " <|im_end|> ",
    "<|eot_id|>",
    "<|begin_of_text|>Hello",
    "<|begin_of_text|><|begin_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|reserved_special_token_5|><|finetune_right_pad_id|><|python_tag|>",
    "<think>\nreasoning\n</think>\n\nanswer",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
    "<|fim_prefix|>def<|fim_suffix|>\n<|fim_middle|>",
    "<|im_start",
    "<|im_start|",
    "< bos>",
    "<BOS>",
    "<|IM_START|>",
    "<<bos>>",
    "<|<|im_start|>|>",
    "x<think>y</think>z",
    )

add("repeat",
    "a" * 100,
    "ab" * 50,
    "abc " * 25,
    "!" * 40,
    "=" * 64,
    "-" * 80,
    "..." * 20,
    "\u4e2d" * 50,
    "0" * 50,
    "\u00e9" * 30,
    "\U0001F642" * 20,
    "ha" * 30 + "!",
    "_" * 33,
    "*" * 17 + " " + "#" * 17,
    )

add("misc",
    "\x01\x02\x03 control \x1b[31mred\x1b[0m \x7f",
    "\ue000\uf8ff private use",
    "\uffff\ufffe nonchars \U0010FFFF \U000FFFFD",
    "replacement \ufffd char",
    "\u00a0",
    "\u200d",
    "\ufe0f",
    "\u0301",
    "\U0001F3FB",
    "\t \n",
    "A\u030a\u0327",
    "ASCII ~`!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/",
    "<s>[INST] Hello [/INST]</s>",
    "<|user|>\nhi<|end|>\n<|assistant|>",
    )

LONG = (
    "Natural language processing (NLP) is an interdisciplinary subfield of computer science and "
    "linguistics. It is primarily concerned with giving computers the ability to support and "
    "manipulate human language. It involves processing natural language datasets, such as text "
    "corpora or speech corpora, using either rule-based or probabilistic (i.e. statistical and, "
    "most recently, neural network-based) machine learning approaches. The goal is a computer "
    "capable of \"understanding\" the contents of documents, including the contextual nuances of "
    "the language within them. To this end, natural language processing often borrows ideas from "
    "theoretical linguistics. The technology can then accurately extract information and insights "
    "contained in the documents as well as categorize and organize the documents themselves.\n\n"
    "Challenges in natural language processing frequently involve speech recognition, natural-"
    "language understanding, and natural-language generation. In 1950, Alan Turing published an "
    "article titled \"Computing Machinery and Intelligence\" which proposed what is now called the "
    "Turing test as a criterion of intelligence. The Georgetown experiment in 1954 involved fully "
    "automatic translation of more than sixty Russian sentences into English; the authors claimed "
    "that within three or five years, machine translation would be a solved problem. However, real "
    "progress was much slower, and after the ALPAC report in 1966, which found that ten years of "
    "research had failed to fulfill the expectations, funding for machine translation was "
    "dramatically reduced. Little further research in machine translation was conducted in America "
    "(though some research continued elsewhere, such as Japan and Europe) until the late 1980s, "
    "when the first statistical machine translation systems were developed.\n\n"
    "In 2010, Tom\u00e1\u0161 Mikolov applied a simple recurrent neural network to language "
    "modelling; today's large language models "
    "handle dozens of languages, code, and emoji \U0001F916 alike."
)
add("long", LONG)
add("long",
    "\u81ea\u7136\u8bed\u8a00\u5904\u7406\u662f\u8ba1\u7b97\u673a\u79d1\u5b66\u9886\u57df\u4e0e\u4eba\u5de5\u667a\u80fd\u9886\u57df\u4e2d\u7684\u4e00\u4e2a\u91cd\u8981\u65b9\u5411\u3002" * 6
    + "\n" + "\u0415\u0441\u0442\u0435\u0441\u0442\u0432\u0435\u043d\u043d\u044b\u0439 \u044f\u0437\u044b\u043a \u2014 \u044d\u0442\u043e \u044f\u0437\u044b\u043a \u043e\u0431\u0449\u0435\u043d\u0438\u044f \u043b\u044e\u0434\u0435\u0439. " * 4
    + "\n" + "def f(x):\n    return x * 2  # \u00e9\u00e8\u00ea\n" * 3)

# ---------------------------------------------------------------------------------------------
# Invalid UTF-8: byte strings (hex) that a tokenizer must reject with a clear error.
# (Rust `tokenizers` takes &str and cannot even be called with these; Python's transformers
# would raise at bytes.decode. There is no reference output: the expected result is an error.)
# ---------------------------------------------------------------------------------------------
INVALID = [
    ("lone continuation byte", "80"),
    ("lone continuation in text", "6162bf6364"),
    ("lone lead byte at end", "6162c3"),
    ("truncated 3-byte (euro sign E2 82 AC cut)", "e282"),
    ("truncated 3-byte then ASCII", "e28261"),
    ("truncated 4-byte (emoji F0 9F 98 cut)", "f09f98"),
    ("truncated 4-byte then space", "f09f9820"),
    ("0xFF", "ff"),
    ("0xFE", "fe"),
    ("overlong slash C0 AF", "c0af"),
    ("overlong NUL C0 80", "c080"),
    ("overlong 3-byte E0 80 AF", "e080af"),
    ("overlong 4-byte F0 80 80 AF", "f08080af"),
    ("UTF-16 surrogate D800 (ED A0 80)", "eda080"),
    ("surrogate pair encoded as two 3-byte sequences", "eda0bdedb8800a"),
    ("above U+10FFFF (F4 90 80 80)", "f4908080"),
    ("5-byte form F8 88 80 80 80", "f888808080"),
    ("lead byte F5", "f5808080"),
    ("two continuation bytes after valid char", "c3a98080"),
    ("Latin-1 text (caf\\xe9)", "636166e9"),
    ("valid prefix, bad tail", "48656c6c6f2c20e4b896e7958c21e2"),
    ("CESU-8 style emoji", "eda0bdedb880"),
]

# ---------------------------------------------------------------------------------------------
# Decode cases: id sequences that decode to invalid UTF-8 (or mix specials). Written symbolically;
# tok_reference.py resolves the items to ids per tokenizer and stores ids + expected strings:
#   {"byte": N}    the single-byte token for byte N: "<0xNN>" (ByteFallback, Gemma) or the
#                  ByteLevel character for byte N (Llama 3, Qwen)
#   {"text": s}    the ids of encode(s, add_special_tokens=False)
#   {"special": "bos"|"eos"}  the tokenizer's BOS / EOS id (skipped where it has none)
#   {"token": s}   token_to_id(s) (skipped for tokenizers without that token)
# ---------------------------------------------------------------------------------------------
def B(*bs):
    return [{"byte": b} for b in bs]


T = lambda s: {"text": s}

DECODE = [
    ("lone lead byte E2", B(0xE2)),
    ("lone continuation byte 80", B(0x80)),
    ("two continuation bytes", B(0x80, 0x80)),
    ("euro sign from three byte tokens", B(0xE2, 0x82, 0xAC)),
    ("truncated euro E2 82", B(0xE2, 0x82)),
    ("truncated euro between text", [T("a")] + B(0xE2, 0x82) + [T("b")]),
    ("lead byte then text", B(0xE2) + [T("abc")]),
    ("text then continuation byte", [T("abc")] + B(0xA9)),
    ("truncated 4-byte emoji F0 9F 98", B(0xF0, 0x9F, 0x98)),
    ("emoji from four byte tokens", B(0xF0, 0x9F, 0x98, 0x80)),
    ("0xFF byte", B(0xFF)),
    ("overlong C0 AF", B(0xC0, 0xAF)),
    ("surrogate ED A0 80", B(0xED, 0xA0, 0x80)),
    ("above U+10FFFF F4 90 80 80", B(0xF4, 0x90, 0x80, 0x80)),
    ("e-acute C3 A9 then stray A9", B(0xC3, 0xA9, 0xA9)),
    ("ASCII byte tokens", B(0x48, 0x69)),
    ("bos then lone byte", [{"special": "bos"}] + B(0xE2)),
    ("lone byte then eos", B(0xE2) + [{"special": "eos"}]),
    ("lone lead byte then special token then continuation",
     B(0xE2) + [{"token": "<|im_end|>"}, {"token": "<end_of_turn>"}, {"token": "<|eot_id|>"}] + B(0x82, 0xAC)),
    ("text with specials", [{"special": "bos"}, T("Hello"), {"special": "eos"}]),
    ("empty", []),
]


# ---------------------------------------------------------------------------------------------
# Chat-template cases (tests/tok/chat/cases.json). Every case is rendered with every template;
# kwargs are passed to apply_chat_template as template variables. date_string is pinned in every
# case so that Llama 3.2's template never calls strftime_now (today's date).
# ---------------------------------------------------------------------------------------------
DATE = "26 Jul 2024"
THINK = "<think>\nreasoning\n</think>\n\nanswer"


def M(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


CHAT = [
    ("user_only", M(("user", "Hello!")), True, {}),
    ("system_user", M(("system", "You are a helpful assistant."),
                      ("user", "What is the capital of France?")), True, {}),
    ("system_user_assistant_user", M(("system", "You are a terse assistant."), ("user", "Hi"),
                                     ("assistant", "Hello! How can I help?"),
                                     ("user", "Tell me a joke.")), True, {}),
    ("three_turns", M(("user", "What is 2+2?"), ("assistant", "4"), ("user", "And 3+3?"),
                      ("assistant", "6"), ("user", "Thanks!")), True, {}),
    ("unicode_content", M(("system", "R\u00e9ponds en fran\u00e7ais \U0001F1EB\U0001F1F7"),
                          ("user", "\u4f60\u597d \U0001F468\u200d\U0001F469\u200d\U0001F467 "
                                   "\u0645\u0631\u062d\u0628\u0627 cafe\u0301 \"quotes\" 'apos' "
                                   "\\backslash {{ not_a_var }} {% raw %} <b>tag</b> & < > "
                                   "<|im_start|> <start_of_turn> <|eot_id|> <bos> "
                                   "<|begin_of_text|> <think>\ttab")), True, {}),
    ("whitespace_content", M(("system", "  padded system  \n"),
                             ("user", "\n\n  leading and trailing  \t\n"),
                             ("assistant", "  answer with spaces  "),
                             ("user", "next\n\n")), True, {}),
    ("no_generation_prompt", M(("system", "Be brief."), ("user", "Hi"),
                               ("assistant", "Hello.")), False, {}),
    ("no_generation_prompt_user_last", M(("user", "Hello!")), False, {}),
    ("thinking_off", M(("user", "Solve 12*7.")), True, {"enable_thinking": False}),
    ("thinking_on", M(("user", "Solve 12*7.")), True, {"enable_thinking": True}),
    ("think_in_history", M(("user", "What is 6*7?"), ("assistant", THINK),
                           ("user", "Are you sure?")), True, {}),
    ("think_in_history_thinking_off", M(("user", "What is 6*7?"), ("assistant", THINK),
                                        ("user", "Are you sure?")), True,
     {"enable_thinking": False}),
    ("think_in_last_assistant", M(("user", "What is 6*7?"), ("assistant", THINK)), False, {}),
    ("date_string_other", M(("system", "You are a helpful assistant."), ("user", "Date?")), True,
     {"date_string": "01 Jan 2025"}),
    ("system_only", M(("system", "Only a system message.")), True, {}),
    ("empty_content", M(("user", "")), True, {}),
    ("multiline_code", M(("user", "Fix this:\n```python\ndef f(x):\n\treturn x+1\n```\n"),
                         ("assistant", "Here:\n```python\ndef f(x):\n    return x + 1\n```")),
     False, {}),
    ("assistant_last_with_prompt", M(("user", "Hi"), ("assistant", "Hello.")), True, {}),
    ("system_in_middle", M(("user", "A"), ("system", "Be brief."), ("user", "B")), True, {}),
    ("assistant_first", M(("assistant", "Hi there."), ("user", "Hello")), True, {}),
    ("user_user", M(("user", "First."), ("user", "Second.")), True, {}),
    ("system_assistant", M(("system", "Sys."), ("assistant", "Hi.")), True, {}),
]


def dump(obj, path):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tok"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for cat, t in C:
        assert isinstance(t, str) and "\x00" not in t, (cat, t)
        t.encode("utf-8")  # no lone surrogates
    texts = [t for _, t in C]
    dup = {t for t in texts if texts.count(t) > 1}
    assert not dup, dup
    dump({"strings": [{"cat": c, "text": t} for c, t in C]}, os.path.join(a.out, "corpus.json"))
    for name, h in INVALID:
        b = bytes.fromhex(h)
        try:
            b.decode("utf-8")
            raise SystemExit("valid UTF-8 in the invalid list: " + name)
        except UnicodeDecodeError:
            pass
    dump({"invalid_utf8": [{"name": n, "hex": h} for n, h in INVALID]},
         os.path.join(a.out, "invalid_utf8.json"))
    dump({"decode_cases": [{"name": n, "items": it} for n, it in DECODE]},
         os.path.join(a.out, "decode_cases.json"))
    os.makedirs(os.path.join(a.out, "chat"), exist_ok=True)
    names = [n for n, _, _, _ in CHAT]
    assert len(set(names)) == len(names)
    cases = []
    for n, msgs, agp, kw in CHAT:
        kw = dict(kw)
        kw.setdefault("date_string", DATE)
        cases.append({"name": n, "messages": msgs, "add_generation_prompt": agp, "kwargs": kw})
    dump({"cases": cases}, os.path.join(a.out, "chat", "cases.json"))
    cats = {}
    for c, _ in C:
        cats[c] = cats.get(c, 0) + 1
    print("corpus: %d strings (%s); %d invalid UTF-8; %d decode cases; long string %d bytes; "
          "%d chat cases" % (len(C), ", ".join("%s %d" % kv for kv in cats.items()), len(INVALID),
                             len(DECODE), len(LONG.encode()), len(CHAT)))


if __name__ == "__main__":
    main()
