/* test_config.c - config.json parsing: published configs of every family in
 * both spellings (transformers 4.x and 5.x), class defaults, and every
 * error path with its message.
 *
 * JSON is written with single quotes to keep it readable; jq() turns them
 * into double quotes.  The 4.x configs are the published files of the
 * Hugging Face repositories named above each one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/config.h"
#include "test.h"

#define PATH "m/config.json"

static char *jq(const char *s)
{
    char *j = strdup(s);
    assert_non_null(j);
    for (char *p = j; *p; p++)
        if (*p == '\'') *p = '"';
    return j;
}

static int parse(const char *single_quoted, model_config *c)
{
    char *j = jq(single_quoted);
    int rc = config_parse(j, strlen(j), PATH, c);
    free(j);
    return rc;
}

static void parse_ok(const char *single_quoted, model_config *c)
{
    int rc = parse(single_quoted, c);
    if (rc != INFER_OK) fail_msg("config_parse: %s (%s)", infer_status_name(rc), infer_last_error());
}

/* The status, a message that starts with the path and contains needle, and
 * a struct left zeroed. */
static void expect_error(const char *single_quoted, int status, const char *needle)
{
    model_config c;
    int rc = parse(single_quoted, &c);
    const char *msg = infer_last_error();
    if (rc != status)
        fail_msg("got %s (%s), want %s", infer_status_name(rc), msg, infer_status_name(status));
    if (strncmp(msg, PATH ": ", strlen(PATH ": ")) != 0 || !strstr(msg, needle))
        fail_msg("message \"%s\" does not start with the path or lacks \"%s\"", msg, needle);
    assert_null(c.layer_sliding);
    assert_int_equal(c.n_layers, 0);
    config_free(&c);
}

static void assert_near(double got, double want)
{
    if (!(fabs(got - want) <= 1e-12 * fabs(want)))
        fail_msg("got %.17g, want %.17g", got, want);
}

static int count_sliding(const model_config *c)
{
    int n = 0;
    for (int i = 0; i < c->n_layers; i++) n += c->layer_sliding[i];
    return n;
}

static void assert_rope(const rope_config *r, rope_kind kind, double theta, double factor)
{
    assert_int_equal(r->kind, kind);
    assert_near(r->theta, theta);
    assert_near(r->factor, factor);
}

static void assert_same_rope(const rope_config *a, const rope_config *b)
{
    assert_int_equal(a->kind, b->kind);
    assert_true(a->theta == b->theta && a->factor == b->factor);
    assert_true(a->low_freq_factor == b->low_freq_factor);
    assert_true(a->high_freq_factor == b->high_freq_factor);
    assert_int_equal(a->original_max_position, b->original_max_position);
}

/* Every field of two parsed configs. */
static void assert_same(const model_config *a, const model_config *b)
{
    assert_string_equal(a->model_type, b->model_type);
    assert_string_equal(a->architecture, b->architecture);
    assert_string_equal(a->dtype, b->dtype);
    assert_int_equal(a->family, b->family);
    assert_int_equal(a->multimodal, b->multimodal);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->hidden_size, b->hidden_size);
    assert_int_equal(a->intermediate_size, b->intermediate_size);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->max_position_embeddings, b->max_position_embeddings);
    assert_true(a->rms_norm_eps == b->rms_norm_eps);
    assert_int_equal(a->norm_plus_one, b->norm_plus_one);
    assert_int_equal(a->qk_norm, b->qk_norm);
    assert_int_equal(a->sandwich_norms, b->sandwich_norms);
    assert_int_equal(a->qkv_bias, b->qkv_bias);
    assert_int_equal(a->o_bias, b->o_bias);
    assert_int_equal(a->mlp_bias, b->mlp_bias);
    assert_int_equal(a->act, b->act);
    assert_int_equal(a->embed_scale, b->embed_scale);
    assert_true(a->attn_scale == b->attn_scale);
    assert_true(a->attn_softcap == b->attn_softcap);
    assert_true(a->final_softcap == b->final_softcap);
    assert_int_equal(a->tie_word_embeddings, b->tie_word_embeddings);
    assert_int_equal(a->sliding_window, b->sliding_window);
    assert_memory_equal(a->layer_sliding, b->layer_sliding, (size_t)a->n_layers);
    assert_same_rope(&a->rope_global, &b->rope_global);
    assert_same_rope(&a->rope_local, &b->rope_local);
    assert_int_equal(a->bos_token_id, b->bos_token_id);
}

static void assert_same_json(const char *old_spelling, const char *new_spelling)
{
    model_config a, b;
    parse_ok(old_spelling, &a);
    parse_ok(new_spelling, &b);
    assert_same(&a, &b);
    config_free(&a);
    config_free(&b);
}

/* layer_types lists, spelled out. */
#define S_ "'sliding_attention',"
#define F_ "'full_attention',"
#define S_END "'sliding_attention']"
#define F_END "'full_attention']"
#define F4 F_ F_ F_ F_
#define G6 S_ S_ S_ S_ S_ F_
#define SF2 S_ F_
#define SF12 SF2 SF2 SF2 SF2 SF2 SF2 SF2 SF2 SF2 SF2 SF2 SF2

/* ------------------------------------------------------------------ */
/* Published configs (transformers 4.x) and their 5.x spelling          */
/* ------------------------------------------------------------------ */

/* meta-llama/Llama-3.2-1B */
static const char *llama32_1b =
    "{'architectures': ['LlamaForCausalLM'], 'attention_bias': false, 'attention_dropout': 0.0,"
    " 'bos_token_id': 128000, 'eos_token_id': 128001, 'head_dim': 64, 'hidden_act': 'silu',"
    " 'hidden_size': 2048, 'initializer_range': 0.02, 'intermediate_size': 8192,"
    " 'max_position_embeddings': 131072, 'mlp_bias': false, 'model_type': 'llama',"
    " 'num_attention_heads': 32, 'num_hidden_layers': 16, 'num_key_value_heads': 8,"
    " 'pretraining_tp': 1, 'rms_norm_eps': 1e-05, 'rope_scaling': {'factor': 32.0,"
    " 'high_freq_factor': 4.0, 'low_freq_factor': 1.0, 'original_max_position_embeddings': 8192,"
    " 'rope_type': 'llama3'}, 'rope_theta': 500000.0, 'tie_word_embeddings': true,"
    " 'torch_dtype': 'bfloat16', 'transformers_version': '4.45.0.dev0', 'use_cache': true,"
    " 'vocab_size': 128256}";

static const char *llama32_1b_v5 =
    "{'architectures': ['LlamaForCausalLM'], 'attention_bias': false, 'attention_dropout': 0.0,"
    " 'bos_token_id': 128000, 'dtype': 'bfloat16', 'eos_token_id': 128001, 'head_dim': 64,"
    " 'hidden_act': 'silu', 'hidden_size': 2048, 'initializer_range': 0.02,"
    " 'intermediate_size': 8192, 'max_position_embeddings': 131072, 'mlp_bias': false,"
    " 'model_type': 'llama', 'num_attention_heads': 32, 'num_hidden_layers': 16,"
    " 'num_key_value_heads': 8, 'pretraining_tp': 1, 'rms_norm_eps': 1e-05,"
    " 'rope_parameters': {'factor': 32.0, 'high_freq_factor': 4.0, 'low_freq_factor': 1.0,"
    " 'original_max_position_embeddings': 8192, 'rope_theta': 500000.0, 'rope_type': 'llama3'},"
    " 'tie_word_embeddings': true, 'transformers_version': '5.0.0', 'use_cache': true,"
    " 'vocab_size': 128256}";

/* meta-llama/Llama-3.1-8B */
static const char *llama31_8b =
    "{'architectures': ['LlamaForCausalLM'], 'attention_bias': false, 'attention_dropout': 0.0,"
    " 'bos_token_id': 128000, 'eos_token_id': 128001, 'hidden_act': 'silu', 'hidden_size': 4096,"
    " 'initializer_range': 0.02, 'intermediate_size': 14336, 'max_position_embeddings': 131072,"
    " 'mlp_bias': false, 'model_type': 'llama', 'num_attention_heads': 32,"
    " 'num_hidden_layers': 32, 'num_key_value_heads': 8, 'pretraining_tp': 1,"
    " 'rms_norm_eps': 1e-05, 'rope_scaling': {'factor': 8.0, 'low_freq_factor': 1.0,"
    " 'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192,"
    " 'rope_type': 'llama3'}, 'rope_theta': 500000.0, 'tie_word_embeddings': false,"
    " 'torch_dtype': 'bfloat16', 'transformers_version': '4.43.0.dev0', 'use_cache': true,"
    " 'vocab_size': 128256}";

static const char *llama31_8b_v5 =
    "{'architectures': ['LlamaForCausalLM'], 'attention_bias': false, 'bos_token_id': 128000,"
    " 'dtype': 'bfloat16', 'eos_token_id': 128001, 'head_dim': 128, 'hidden_act': 'silu',"
    " 'hidden_size': 4096, 'intermediate_size': 14336, 'max_position_embeddings': 131072,"
    " 'mlp_bias': false, 'model_type': 'llama', 'num_attention_heads': 32,"
    " 'num_hidden_layers': 32, 'num_key_value_heads': 8, 'rms_norm_eps': 1e-05,"
    " 'rope_parameters': {'factor': 8.0, 'high_freq_factor': 4.0, 'low_freq_factor': 1.0,"
    " 'original_max_position_embeddings': 8192, 'rope_theta': 500000.0, 'rope_type': 'llama3'},"
    " 'tie_word_embeddings': false, 'vocab_size': 128256}";

/* Qwen/Qwen2.5-0.5B */
static const char *qwen25_05b =
    "{'architectures': ['Qwen2ForCausalLM'], 'attention_dropout': 0.0, 'bos_token_id': 151643,"
    " 'eos_token_id': 151643, 'hidden_act': 'silu', 'hidden_size': 896,"
    " 'initializer_range': 0.02, 'intermediate_size': 4864, 'max_position_embeddings': 32768,"
    " 'max_window_layers': 24, 'model_type': 'qwen2', 'num_attention_heads': 14,"
    " 'num_hidden_layers': 24, 'num_key_value_heads': 2, 'rms_norm_eps': 1e-06,"
    " 'rope_theta': 1000000.0, 'sliding_window': 32768, 'tie_word_embeddings': true,"
    " 'torch_dtype': 'bfloat16', 'transformers_version': '4.40.1', 'use_cache': true,"
    " 'use_mrope': false, 'use_sliding_window': false, 'vocab_size': 151936}";

static const char *qwen25_05b_v5 =
    "{'architectures': ['Qwen2ForCausalLM'], 'attention_dropout': 0.0, 'bos_token_id': 151643,"
    " 'dtype': 'bfloat16', 'eos_token_id': 151643, 'hidden_act': 'silu', 'hidden_size': 896,"
    " 'intermediate_size': 4864, 'layer_types': [" F4 F4 F4 F4 F4 F_ F_ F_ F_END ","
    " 'max_position_embeddings': 32768, 'max_window_layers': 24, 'model_type': 'qwen2',"
    " 'num_attention_heads': 14, 'num_hidden_layers': 24, 'num_key_value_heads': 2,"
    " 'rms_norm_eps': 1e-06, 'rope_parameters': {'rope_theta': 1000000.0,"
    " 'rope_type': 'default'}, 'sliding_window': null, 'tie_word_embeddings': true,"
    " 'use_cache': true, 'use_sliding_window': false, 'vocab_size': 151936}";

/* Qwen/Qwen3-0.6B */
static const char *qwen3_06b =
    "{'architectures': ['Qwen3ForCausalLM'], 'attention_bias': false, 'attention_dropout': 0.0,"
    " 'bos_token_id': 151643, 'eos_token_id': 151645, 'head_dim': 128, 'hidden_act': 'silu',"
    " 'hidden_size': 1024, 'initializer_range': 0.02, 'intermediate_size': 3072,"
    " 'max_position_embeddings': 40960, 'max_window_layers': 28, 'model_type': 'qwen3',"
    " 'num_attention_heads': 16, 'num_hidden_layers': 28, 'num_key_value_heads': 8,"
    " 'rms_norm_eps': 1e-06, 'rope_scaling': null, 'rope_theta': 1000000,"
    " 'sliding_window': null, 'tie_word_embeddings': true, 'torch_dtype': 'bfloat16',"
    " 'transformers_version': '4.51.0', 'use_cache': true, 'use_sliding_window': false,"
    " 'vocab_size': 151936}";

static const char *qwen3_06b_v5 =
    "{'architectures': ['Qwen3ForCausalLM'], 'attention_bias': false, 'bos_token_id': 151643,"
    " 'dtype': 'bfloat16', 'eos_token_id': 151645, 'head_dim': 128, 'hidden_act': 'silu',"
    " 'hidden_size': 1024, 'intermediate_size': 3072,"
    " 'layer_types': [" F4 F4 F4 F4 F4 F4 F_ F_ F_ F_END ", 'max_position_embeddings': 40960,"
    " 'max_window_layers': 28, 'model_type': 'qwen3', 'num_attention_heads': 16,"
    " 'num_hidden_layers': 28, 'num_key_value_heads': 8, 'rms_norm_eps': 1e-06,"
    " 'rope_parameters': {'rope_theta': 1000000, 'rope_type': 'default'},"
    " 'sliding_window': null, 'tie_word_embeddings': true, 'use_sliding_window': false,"
    " 'vocab_size': 151936}";

/* google/gemma-2-2b */
static const char *gemma2_2b =
    "{'architectures': ['Gemma2ForCausalLM'], 'attention_bias': false, 'attention_dropout': 0.0,"
    " 'attn_logit_softcapping': 50.0, 'bos_token_id': 2, 'cache_implementation': 'hybrid',"
    " 'eos_token_id': 1, 'final_logit_softcapping': 30.0, 'head_dim': 256,"
    " 'hidden_act': 'gelu_pytorch_tanh', 'hidden_activation': 'gelu_pytorch_tanh',"
    " 'hidden_size': 2304, 'initializer_range': 0.02, 'intermediate_size': 9216,"
    " 'max_position_embeddings': 8192, 'model_type': 'gemma2', 'num_attention_heads': 8,"
    " 'num_hidden_layers': 26, 'num_key_value_heads': 4, 'pad_token_id': 0,"
    " 'query_pre_attn_scalar': 256, 'rms_norm_eps': 1e-06, 'rope_theta': 10000.0,"
    " 'sliding_window': 4096, 'torch_dtype': 'float32', 'transformers_version': '4.42.4',"
    " 'use_cache': true, 'vocab_size': 256000}";

static const char *gemma2_2b_v5 =
    "{'architectures': ['Gemma2ForCausalLM'], 'attention_bias': false,"
    " 'attn_logit_softcapping': 50.0, 'bos_token_id': 2, 'dtype': 'float32', 'eos_token_id': 1,"
    " 'final_logit_softcapping': 30.0, 'head_dim': 256, 'hidden_activation': 'gelu_pytorch_tanh',"
    " 'hidden_size': 2304, 'intermediate_size': 9216, 'layer_types': [" SF12 S_ F_END ","
    " 'max_position_embeddings': 8192, 'model_type': 'gemma2', 'num_attention_heads': 8,"
    " 'num_hidden_layers': 26, 'num_key_value_heads': 4, 'pad_token_id': 0,"
    " 'query_pre_attn_scalar': 256, 'rms_norm_eps': 1e-06,"
    " 'rope_parameters': {'rope_theta': 10000.0, 'rope_type': 'default'},"
    " 'sliding_window': 4096, 'tie_word_embeddings': true,"
    " 'use_bidirectional_attention': null, 'vocab_size': 256000}";

/* google/gemma-3-1b-it */
static const char *gemma3_1b =
    "{'architectures': ['Gemma3ForCausalLM'], 'attention_bias': false, 'attention_dropout': 0.0,"
    " 'attn_logit_softcapping': null, 'bos_token_id': 2, 'cache_implementation': 'hybrid',"
    " 'eos_token_id': [1, 106], 'final_logit_softcapping': null, 'head_dim': 256,"
    " 'hidden_activation': 'gelu_pytorch_tanh', 'hidden_size': 1152, 'initializer_range': 0.02,"
    " 'intermediate_size': 6912, 'max_position_embeddings': 32768, 'model_type': 'gemma3_text',"
    " 'num_attention_heads': 4, 'num_hidden_layers': 26, 'num_key_value_heads': 1,"
    " 'pad_token_id': 0, 'query_pre_attn_scalar': 256, 'rms_norm_eps': 1e-06,"
    " 'rope_local_base_freq': 10000, 'rope_scaling': null, 'rope_theta': 1000000,"
    " 'sliding_window': 512, 'sliding_window_pattern': 6, 'torch_dtype': 'bfloat16',"
    " 'transformers_version': '4.50.0.dev0', 'use_cache': true, 'vocab_size': 262144}";

static const char *gemma3_1b_v5 =
    "{'_sliding_window_pattern': 6, 'architectures': ['Gemma3ForCausalLM'],"
    " 'attention_bias': false, 'attn_logit_softcapping': null, 'bos_token_id': 2,"
    " 'dtype': 'bfloat16', 'eos_token_id': [1, 106], 'final_logit_softcapping': null,"
    " 'head_dim': 256, 'hidden_activation': 'gelu_pytorch_tanh', 'hidden_size': 1152,"
    " 'intermediate_size': 6912, 'layer_types': [" G6 G6 G6 G6 S_ S_END ","
    " 'max_position_embeddings': 32768, 'model_type': 'gemma3_text', 'num_attention_heads': 4,"
    " 'num_hidden_layers': 26, 'num_key_value_heads': 1, 'pad_token_id': 0,"
    " 'query_pre_attn_scalar': 256, 'rms_norm_eps': 1e-06,"
    " 'rope_parameters': {'full_attention': {'rope_theta': 1000000, 'rope_type': 'default'},"
    " 'sliding_attention': {'rope_theta': 10000, 'rope_type': 'default'}},"
    " 'sliding_window': 512, 'use_bidirectional_attention': false, 'vocab_size': 262144}";

/* google/gemma-3-4b-it: the text model under text_config, most fields left
 * out; vision_config has fields of the same names that must not be read. */
static const char *gemma3_4b =
    "{'architectures': ['Gemma3ForConditionalGeneration'], 'boi_token_index': 255999,"
    " 'eoi_token_index': 256000, 'eos_token_id': [1, 106], 'image_token_index': 262144,"
    " 'initializer_range': 0.02, 'mm_tokens_per_image': 256, 'model_type': 'gemma3',"
    " 'text_config': {'hidden_size': 2560, 'intermediate_size': 10240,"
    " 'model_type': 'gemma3_text', 'num_hidden_layers': 34,"
    " 'rope_scaling': {'factor': 8.0, 'rope_type': 'linear'}, 'sliding_window': 1024},"
    " 'torch_dtype': 'bfloat16', 'transformers_version': '4.50.0.dev0',"
    " 'vision_config': {'hidden_size': 1152, 'image_size': 896, 'intermediate_size': 4304,"
    " 'model_type': 'siglip_vision_model', 'num_attention_heads': 16, 'num_hidden_layers': 27,"
    " 'patch_size': 14, 'vision_use_head': false}}";

static const char *gemma3_4b_v5 =
    "{'architectures': ['Gemma3ForConditionalGeneration'], 'boi_token_index': 255999,"
    " 'dtype': 'bfloat16', 'eoi_token_index': 256000, 'eos_token_id': [1, 106],"
    " 'image_token_index': 262144, 'mm_tokens_per_image': 256, 'model_type': 'gemma3',"
    " 'text_config': {'hidden_size': 2560, 'intermediate_size': 10240,"
    " 'layer_types': [" G6 G6 G6 G6 G6 S_ S_ S_ S_END ", 'model_type': 'gemma3_text',"
    " 'num_hidden_layers': 34, 'rope_parameters': {'full_attention': {'factor': 8.0,"
    " 'rope_theta': 1000000.0, 'rope_type': 'linear'}, 'sliding_attention': {"
    " 'rope_theta': 10000.0, 'rope_type': 'default'}}, 'sliding_window': 1024,"
    " 'use_bidirectional_attention': false},"
    " 'tie_word_embeddings': true, 'vision_config': {'hidden_size': 1152,"
    " 'model_type': 'siglip_vision_model', 'num_attention_heads': 16, 'num_hidden_layers': 27}}";

static void no_sliding(const model_config *c)
{
    assert_non_null(c->layer_sliding);
    assert_int_equal(count_sliding(c), 0);
    assert_int_equal(c->sliding_window, 0);
}

static void llama_3_2_1b(void **state)
{
    (void)state;
    model_config c;
    parse_ok(llama32_1b, &c);
    assert_string_equal(c.model_type, "llama");
    assert_string_equal(c.architecture, "LlamaForCausalLM");
    assert_int_equal(c.family, FAMILY_LLAMA);
    assert_int_equal(c.multimodal, 0);
    assert_int_equal(c.vocab_size, 128256);
    assert_int_equal(c.hidden_size, 2048);
    assert_int_equal(c.intermediate_size, 8192);
    assert_int_equal(c.n_layers, 16);
    assert_int_equal(c.n_heads, 32);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_true(c.rms_norm_eps == 1e-5);
    assert_int_equal(c.norm_plus_one + c.qk_norm + c.sandwich_norms + c.embed_scale, 0);
    assert_int_equal(c.qkv_bias + c.o_bias + c.mlp_bias, 0);
    assert_int_equal(c.act, ACT_SILU);
    assert_near(c.attn_scale, 0.125);
    assert_true(c.attn_softcap == 0.0 && c.final_softcap == 0.0);
    assert_int_equal(c.tie_word_embeddings, 1);
    no_sliding(&c);
    assert_rope(&c.rope_global, ROPE_LLAMA3, 500000.0, 32.0);
    assert_true(c.rope_global.low_freq_factor == 1.0 && c.rope_global.high_freq_factor == 4.0);
    assert_int_equal(c.rope_global.original_max_position, 8192);
    assert_same_rope(&c.rope_local, &c.rope_global);
    assert_string_equal(c.dtype, "bfloat16");
    assert_int_equal(c.bos_token_id, 128000);
    config_free(&c);
}

static void llama_3_1_8b(void **state)
{
    (void)state;
    model_config c;
    parse_ok(llama31_8b, &c);
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.intermediate_size, 14336);
    assert_int_equal(c.n_layers, 32);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128); /* hidden_size / num_attention_heads */
    assert_near(c.attn_scale, 1.0 / sqrt(128.0));
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_rope(&c.rope_global, ROPE_LLAMA3, 500000.0, 8.0);
    assert_int_equal(c.rope_global.original_max_position, 8192);
    no_sliding(&c);
    config_free(&c);
}

static void qwen2_5_0_5b(void **state)
{
    (void)state;
    model_config c;
    parse_ok(qwen25_05b, &c);
    assert_int_equal(c.family, FAMILY_QWEN2);
    assert_int_equal(c.vocab_size, 151936);
    assert_int_equal(c.hidden_size, 896);
    assert_int_equal(c.intermediate_size, 4864);
    assert_int_equal(c.n_layers, 24);
    assert_int_equal(c.n_heads, 14);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.max_position_embeddings, 32768);
    assert_true(c.rms_norm_eps == 1e-6);
    assert_int_equal(c.qkv_bias, 1);
    assert_int_equal(c.o_bias, 0);
    assert_int_equal(c.mlp_bias, 0);
    assert_int_equal(c.qk_norm, 0);
    assert_int_equal(c.act, ACT_SILU);
    assert_int_equal(c.tie_word_embeddings, 1);
    no_sliding(&c); /* use_sliding_window is false */
    assert_rope(&c.rope_global, ROPE_DEFAULT, 1e6, 1.0);
    assert_same_rope(&c.rope_local, &c.rope_global);
    assert_int_equal(c.bos_token_id, 151643);
    config_free(&c);
}

static void qwen3_0_6b(void **state)
{
    (void)state;
    model_config c;
    parse_ok(qwen3_06b, &c);
    assert_int_equal(c.family, FAMILY_QWEN3);
    assert_int_equal(c.hidden_size, 1024);
    assert_int_equal(c.intermediate_size, 3072);
    assert_int_equal(c.n_layers, 28);
    assert_int_equal(c.n_heads, 16);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128); /* not hidden / heads = 64 */
    assert_int_equal(c.max_position_embeddings, 40960);
    assert_int_equal(c.qk_norm, 1);
    assert_int_equal(c.qkv_bias + c.o_bias + c.mlp_bias, 0);
    assert_int_equal(c.norm_plus_one + c.sandwich_norms + c.embed_scale, 0);
    assert_near(c.attn_scale, 1.0 / sqrt(128.0));
    assert_rope(&c.rope_global, ROPE_DEFAULT, 1e6, 1.0);
    no_sliding(&c);
    assert_int_equal(c.tie_word_embeddings, 1);
    config_free(&c);
}

static void gemma_2_2b(void **state)
{
    (void)state;
    model_config c;
    parse_ok(gemma2_2b, &c);
    assert_int_equal(c.family, FAMILY_GEMMA2);
    assert_int_equal(c.vocab_size, 256000);
    assert_int_equal(c.hidden_size, 2304);
    assert_int_equal(c.n_layers, 26);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 256);
    assert_int_equal(c.norm_plus_one, 1);
    assert_int_equal(c.sandwich_norms, 1);
    assert_int_equal(c.embed_scale, 1);
    assert_int_equal(c.qk_norm, 0);
    assert_int_equal(c.act, ACT_GELU_TANH);
    assert_near(c.attn_scale, 1.0 / 16.0);
    assert_true(c.attn_softcap == 50.0 && c.final_softcap == 30.0);
    assert_int_equal(c.tie_word_embeddings, 1); /* class default */
    assert_int_equal(c.sliding_window, 4096);
    for (int i = 0; i < c.n_layers; i++) assert_int_equal(c.layer_sliding[i], i % 2 == 0);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 10000.0, 1.0);
    assert_same_rope(&c.rope_local, &c.rope_global);
    assert_string_equal(c.dtype, "float32");
    assert_int_equal(c.bos_token_id, 2);
    config_free(&c);
}

static void gemma_3_1b(void **state)
{
    (void)state;
    model_config c;
    parse_ok(gemma3_1b, &c);
    assert_int_equal(c.family, FAMILY_GEMMA3);
    assert_string_equal(c.model_type, "gemma3_text");
    assert_int_equal(c.multimodal, 0);
    assert_int_equal(c.vocab_size, 262144);
    assert_int_equal(c.hidden_size, 1152);
    assert_int_equal(c.intermediate_size, 6912);
    assert_int_equal(c.n_heads, 4);
    assert_int_equal(c.n_kv_heads, 1);
    assert_int_equal(c.head_dim, 256);
    assert_int_equal(c.max_position_embeddings, 32768);
    assert_int_equal(c.qk_norm + c.norm_plus_one + c.sandwich_norms + c.embed_scale, 4);
    assert_true(c.attn_softcap == 0.0 && c.final_softcap == 0.0);
    assert_near(c.attn_scale, 1.0 / 16.0);
    assert_int_equal(c.sliding_window, 512);
    for (int i = 0; i < c.n_layers; i++) assert_int_equal(c.layer_sliding[i], (i + 1) % 6 != 0);
    assert_int_equal(count_sliding(&c), 22);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 1e6, 1.0);
    assert_rope(&c.rope_local, ROPE_DEFAULT, 10000.0, 1.0);
    assert_int_equal(c.tie_word_embeddings, 1);
    assert_int_equal(c.bos_token_id, 2);
    config_free(&c);
}

static void gemma_3_4b_multimodal(void **state)
{
    (void)state;
    model_config c;
    parse_ok(gemma3_4b, &c);
    assert_string_equal(c.model_type, "gemma3");
    assert_string_equal(c.architecture, "Gemma3ForConditionalGeneration");
    assert_int_equal(c.family, FAMILY_GEMMA3);
    assert_int_equal(c.multimodal, 1);
    /* Given in text_config. */
    assert_int_equal(c.hidden_size, 2560);
    assert_int_equal(c.intermediate_size, 10240);
    assert_int_equal(c.n_layers, 34);
    assert_int_equal(c.sliding_window, 1024);
    assert_rope(&c.rope_global, ROPE_LINEAR, 1e6, 8.0);
    /* Gemma3TextConfig defaults. */
    assert_int_equal(c.vocab_size, 262208);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 256);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_true(c.rms_norm_eps == 1e-6);
    assert_near(c.attn_scale, 1.0 / 16.0);
    assert_int_equal(c.act, ACT_GELU_TANH);
    assert_rope(&c.rope_local, ROPE_DEFAULT, 10000.0, 1.0);
    for (int i = 0; i < c.n_layers; i++) assert_int_equal(c.layer_sliding[i], (i + 1) % 6 != 0);
    assert_int_equal(c.bos_token_id, 2);
    assert_int_equal(c.tie_word_embeddings, 1);
    assert_string_equal(c.dtype, "bfloat16");
    config_free(&c);
}

static void new_spelling_same_result(void **state)
{
    (void)state;
    assert_same_json(llama32_1b, llama32_1b_v5);
    assert_same_json(llama31_8b, llama31_8b_v5);
    assert_same_json(qwen25_05b, qwen25_05b_v5);
    assert_same_json(qwen3_06b, qwen3_06b_v5);
    assert_same_json(gemma2_2b, gemma2_2b_v5);
    assert_same_json(gemma3_1b, gemma3_1b_v5);
    assert_same_json(gemma3_4b, gemma3_4b_v5);
}

/* Where both spellings are present, the 5.x one wins. */
static void new_spelling_wins(void **state)
{
    (void)state;
    model_config c;
    parse_ok("{'model_type': 'gemma3_text', 'num_hidden_layers': 4, 'rope_theta': 1e6,"
             " 'rope_local_base_freq': 10000, 'rope_scaling': {'rope_type': 'linear',"
             " 'factor': 8.0}, 'sliding_window_pattern': 2, '_sliding_window_pattern': 3,"
             " 'rope_parameters': {'full_attention': {'rope_type': 'default', 'rope_theta': 2e6},"
             " 'sliding_attention': {'rope_type': 'default', 'rope_theta': 20000}}}",
             &c);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 2e6, 1.0);
    assert_rope(&c.rope_local, ROPE_DEFAULT, 20000.0, 1.0);
    static const unsigned char pattern3[4] = {1, 1, 0, 1};
    assert_memory_equal(c.layer_sliding, pattern3, 4);
    config_free(&c);

    parse_ok("{'model_type': 'gemma3_text', 'num_hidden_layers': 3, 'sliding_window_pattern': 2,"
             " 'layer_types': ['full_attention', 'full_attention', 'full_attention']}",
             &c);
    no_sliding(&c);
    config_free(&c);

    parse_ok("{'model_type': 'llama', 'rope_theta': 500000.0, 'rope_scaling': {'rope_type':"
             " 'linear', 'factor': 4.0}, 'rope_parameters': {'rope_type': 'default'}}",
             &c);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 500000.0, 1.0); /* theta from rope_theta */
    config_free(&c);

    parse_ok("{'model_type': 'qwen2', 'torch_dtype': 'float16', 'dtype': 'bfloat16'}", &c);
    assert_string_equal(c.dtype, "bfloat16");
    config_free(&c);

    /* Gemma 3 nested rope_parameters without a full_attention entry: the
     * legacy rope_scaling and rope_theta still describe the global layers. */
    parse_ok("{'model_type': 'gemma3_text', 'rope_theta': 5e5, 'rope_scaling': {'rope_type':"
             " 'linear', 'factor': 2.0}, 'rope_parameters': {'sliding_attention':"
             " {'rope_type': 'default', 'rope_theta': 12345}}}",
             &c);
    assert_rope(&c.rope_global, ROPE_LINEAR, 5e5, 2.0);
    assert_rope(&c.rope_local, ROPE_DEFAULT, 12345.0, 1.0);
    config_free(&c);
}

/* ------------------------------------------------------------------ */
/* Defaults                                                             */
/* ------------------------------------------------------------------ */

static void llama_defaults(void **state)
{
    (void)state;
    model_config c;
    parse_ok("{'model_type': 'llama'}", &c);
    assert_int_equal(c.vocab_size, 32000);
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.intermediate_size, 11008);
    assert_int_equal(c.n_layers, 32);
    assert_int_equal(c.n_heads, 32);
    assert_int_equal(c.n_kv_heads, 32);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_true(c.rms_norm_eps == 1e-6);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 10000.0, 1.0);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.bos_token_id, 1);
    assert_string_equal(c.architecture, "");
    assert_string_equal(c.dtype, "");
    no_sliding(&c);
    config_free(&c);

    parse_ok("{'model_type': 'llama', 'attention_bias': true, 'mlp_bias': true,"
             " 'hidden_size': 2048, 'num_attention_heads': 16, 'head_dim': 64,"
             " 'bos_token_id': null, 'sliding_window': 'ignored for llama'}",
             &c);
    assert_int_equal(c.qkv_bias + c.o_bias + c.mlp_bias, 3);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.n_kv_heads, 16);
    assert_int_equal(c.bos_token_id, -1);
    no_sliding(&c);
    config_free(&c);
}

static void qwen_defaults(void **state)
{
    (void)state;
    model_config c;
    parse_ok("{'model_type': 'qwen2'}", &c);
    assert_int_equal(c.vocab_size, 151936);
    assert_int_equal(c.intermediate_size, 22016);
    assert_int_equal(c.n_kv_heads, 32);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.max_position_embeddings, 32768);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.tie_word_embeddings, 0);
    assert_int_equal(c.qkv_bias, 1);
    assert_int_equal(c.o_bias, 0);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 10000.0, 1.0);
    no_sliding(&c);
    config_free(&c);

    /* num_key_value_heads: absent -> 32 (the class default), null -> heads. */
    parse_ok("{'model_type': 'qwen2', 'num_attention_heads': 16, 'num_key_value_heads': null}",
             &c);
    assert_int_equal(c.n_kv_heads, 16);
    config_free(&c);

    parse_ok("{'model_type': 'qwen3', 'hidden_size': 1024, 'num_attention_heads': 16,"
             " 'num_key_value_heads': 8, 'attention_bias': true}",
             &c);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.qkv_bias + c.o_bias, 2);
    config_free(&c);

    /* Sliding windows on layers >= max_window_layers (default 28). */
    parse_ok("{'model_type': 'qwen2', 'num_hidden_layers': 4, 'use_sliding_window': true,"
             " 'sliding_window': 1024, 'max_window_layers': 2}",
             &c);
    static const unsigned char upper[4] = {0, 0, 1, 1};
    assert_memory_equal(c.layer_sliding, upper, 4);
    assert_int_equal(c.sliding_window, 1024);
    config_free(&c);

    parse_ok("{'model_type': 'qwen3', 'num_hidden_layers': 30, 'use_sliding_window': true}", &c);
    assert_int_equal(count_sliding(&c), 2);
    assert_int_equal(c.layer_sliding[28], 1);
    assert_int_equal(c.sliding_window, 4096);
    config_free(&c);

    parse_ok("{'model_type': 'qwen3', 'num_hidden_layers': 30, 'use_sliding_window': true,"
             " 'sliding_window': null}",
             &c);
    no_sliding(&c);
    config_free(&c);
}

static void gemma_defaults(void **state)
{
    (void)state;
    model_config c;
    parse_ok("{'model_type': 'gemma2', 'attn_logit_softcapping': null}", &c);
    assert_int_equal(c.vocab_size, 256000);
    assert_int_equal(c.hidden_size, 2304);
    assert_int_equal(c.intermediate_size, 9216);
    assert_int_equal(c.n_layers, 26);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 256);
    assert_int_equal(c.max_position_embeddings, 8192);
    assert_true(c.attn_softcap == 0.0); /* null: off */
    assert_true(c.final_softcap == 30.0);
    assert_int_equal(c.sliding_window, 4096);
    assert_int_equal(count_sliding(&c), 13);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 10000.0, 1.0);
    assert_int_equal(c.bos_token_id, 2);
    assert_int_equal(c.tie_word_embeddings, 1);
    config_free(&c);

    model_config d;
    parse_ok("{'model_type': 'gemma3_text'}", &c);
    parse_ok("{'model_type': 'gemma3', 'vision_config': {'hidden_size': 7}}", &d);
    assert_int_equal(d.multimodal, 1);
    d.multimodal = 0;
    strcpy(d.model_type, "gemma3_text");
    assert_same(&c, &d);
    assert_int_equal(c.vocab_size, 262208);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_int_equal(c.sliding_window, 4096);
    assert_int_equal(count_sliding(&c), 26 - 4);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 1e6, 1.0);
    assert_rope(&c.rope_local, ROPE_DEFAULT, 10000.0, 1.0);
    assert_true(c.attn_softcap == 0.0 && c.final_softcap == 0.0);
    config_free(&c);
    config_free(&d);

    /* Softcapping is honoured when a Gemma 3 config sets it; fields at the
     * top level of a multimodal config fill in what text_config leaves out. */
    parse_ok("{'model_type': 'gemma3', 'bos_token_id': 7, 'tie_word_embeddings': false,"
             " 'text_config': {'attn_logit_softcapping': 50.0, 'query_pre_attn_scalar': 144}}",
             &c);
    assert_true(c.attn_softcap == 50.0);
    assert_near(c.attn_scale, 1.0 / 12.0);
    assert_int_equal(c.bos_token_id, 7);
    assert_int_equal(c.tie_word_embeddings, 0);
    config_free(&c);

    /* Gemma reads hidden_activation; gelu_tanh is accepted too. */
    parse_ok("{'model_type': 'gemma2', 'hidden_activation': 'gelu_tanh'}", &c);
    assert_int_equal(c.act, ACT_GELU_TANH);
    config_free(&c);
    parse_ok("{'model_type': 'gemma2', 'hidden_act': 'gelu_tanh', 'hidden_activation': null}", &c);
    assert_int_equal(c.act, ACT_GELU_TANH);
    config_free(&c);
}

static void rope_spellings(void **state)
{
    (void)state;
    model_config c;
    parse_ok("{'model_type': 'llama', 'rope_scaling': {'type': 'linear', 'factor': 2.0}}", &c);
    assert_rope(&c.rope_global, ROPE_LINEAR, 10000.0, 2.0);
    config_free(&c);

    parse_ok("{'model_type': 'llama', 'max_position_embeddings': 4096,"
             " 'rope_scaling': {'rope_type': 'dynamic', 'factor': 2.0}}",
             &c);
    assert_rope(&c.rope_global, ROPE_DYNAMIC, 10000.0, 2.0);
    assert_int_equal(c.rope_global.original_max_position, 4096);
    config_free(&c);

    parse_ok("{'model_type': 'qwen2', 'rope_scaling': null, 'rope_theta': 1e6}", &c);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 1e6, 1.0);
    config_free(&c);

    parse_ok("{'model_type': 'qwen2', 'rope_scaling': {'type': 'default', 'factor': 9.0}}", &c);
    assert_rope(&c.rope_global, ROPE_DEFAULT, 10000.0, 1.0);
    config_free(&c);

    /* Duplicate keys: the last one wins, as in Python. */
    parse_ok("{'model_type': 'llama', 'hidden_size': 1024, 'hidden_size': 2048,"
             " 'num_attention_heads': 16}",
             &c);
    assert_int_equal(c.hidden_size, 2048);
    config_free(&c);
}

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

static void model_type_errors(void **state)
{
    (void)state;
    model_config c;
    assert_int_equal(parse("{'model_type': 'foo'}", &c), INFER_ERR_UNSUPPORTED);
    assert_string_equal(infer_last_error(),
                        PATH ": model_type 'foo' is not supported (llama, qwen2, qwen3, gemma2, "
                             "gemma3_text, gemma3)");
    expect_error("{'hidden_size': 4096}", INFER_ERR_MISSING, "model_type");
    expect_error("{'model_type': null}", INFER_ERR_MISSING, "model_type");
    expect_error("{'model_type': 3}", INFER_ERR_FORMAT, "model_type must be a string");
}

static void rope_errors(void **state)
{
    (void)state;
    expect_error("{'model_type': 'qwen2', 'rope_scaling': {'type': 'yarn', 'factor': 4.0,"
                 " 'original_max_position_embeddings': 32768}}",
                 INFER_ERR_UNSUPPORTED, "rope_scaling.rope_type 'yarn'");
    expect_error("{'model_type': 'qwen3', 'rope_parameters': {'rope_type': 'yarn',"
                 " 'factor': 4.0, 'rope_theta': 1e6}}",
                 INFER_ERR_UNSUPPORTED, "rope_parameters.rope_type 'yarn'");
    expect_error("{'model_type': 'llama', 'rope_scaling': {'rope_type': 'longrope'}}",
                 INFER_ERR_UNSUPPORTED, "'longrope'");
    expect_error("{'model_type': 'llama', 'rope_scaling': {'type': 'su'}}", INFER_ERR_UNSUPPORTED,
                 "'su'");
    expect_error("{'model_type': 'gemma3', 'text_config': {'rope_parameters': {"
                 "'full_attention': {'rope_type': 'yarn', 'factor': 8.0}}}}",
                 INFER_ERR_UNSUPPORTED,
                 "text_config.rope_parameters.full_attention.rope_type 'yarn'");
    expect_error("{'model_type': 'gemma3_text', 'rope_parameters': {'sliding_attention':"
                 " {'rope_type': 'ntk', 'factor': 2.0}}}",
                 INFER_ERR_UNSUPPORTED, "rope_parameters.sliding_attention.rope_type 'ntk'");
    expect_error("{'model_type': 'llama', 'rope_scaling': {'rope_type': 'llama3', 'factor': 8.0,"
                 " 'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192}}",
                 INFER_ERR_MISSING, "rope_scaling.low_freq_factor");
    expect_error("{'model_type': 'llama', 'rope_scaling': {'rope_type': 'llama3', 'factor': 8.0,"
                 " 'low_freq_factor': 4.0, 'high_freq_factor': 1.0,"
                 " 'original_max_position_embeddings': 8192}}",
                 INFER_ERR_FORMAT, "high_freq_factor");
    expect_error("{'model_type': 'llama', 'rope_scaling': {'rope_type': 'linear'}}",
                 INFER_ERR_MISSING, "rope_scaling.factor");
    expect_error("{'model_type': 'llama', 'rope_scaling': 'linear'}", INFER_ERR_FORMAT,
                 "rope_scaling must be an object");
    expect_error("{'model_type': 'llama', 'rope_scaling': {'rope_type': 7}}", INFER_ERR_FORMAT,
                 "rope_scaling.rope_type must be a string");
    expect_error("{'model_type': 'llama', 'rope_theta': -1}", INFER_ERR_FORMAT, "rope_theta");
    expect_error("{'model_type': 'gemma3', 'text_config': {'rope_parameters': {"
                 "'full_attention': 3}}}",
                 INFER_ERR_FORMAT, "text_config.rope_parameters.full_attention must be an object");
}

static void unsupported_values(void **state)
{
    (void)state;
    expect_error("{'model_type': 'gemma3_text', 'use_bidirectional_attention': true}",
                 INFER_ERR_UNSUPPORTED, "use_bidirectional_attention");
    expect_error("{'model_type': 'gemma3', 'text_config': {'use_bidirectional_attention': true}}",
                 INFER_ERR_UNSUPPORTED, "use_bidirectional_attention");
    expect_error("{'model_type': 'llama', 'hidden_act': 'gelu'}", INFER_ERR_UNSUPPORTED,
                 "hidden_act 'gelu'");
    expect_error("{'model_type': 'gemma2', 'hidden_activation': 'relu'}", INFER_ERR_UNSUPPORTED,
                 "hidden_activation 'relu'");
    expect_error("{'model_type': 'llama', 'vocab_size': 1e12}", INFER_ERR_UNSUPPORTED,
                 "vocab_size");
    expect_error("{'model_type': 'llama', 'torch_dtype': 'a-very-long-dtype-name'}",
                 INFER_ERR_UNSUPPORTED, "dtype");
}

static void wrong_types(void **state)
{
    (void)state;
    expect_error("{'model_type': 'llama', 'hidden_size': 'big'}", INFER_ERR_FORMAT,
                 "hidden_size must be an integer, not a string");
    expect_error("{'model_type': 'llama', 'vocab_size': 1000.5}", INFER_ERR_FORMAT,
                 "vocab_size must be an integer");
    expect_error("{'model_type': 'llama', 'attention_bias': 'yes'}", INFER_ERR_FORMAT,
                 "attention_bias must be true or false");
    expect_error("{'model_type': 'llama', 'rms_norm_eps': [1e-5]}", INFER_ERR_FORMAT,
                 "rms_norm_eps must be a number, not an array");
    expect_error("{'model_type': 'gemma2', 'layer_types': 'sliding_attention'}", INFER_ERR_FORMAT,
                 "layer_types must be an array");
    expect_error("{'model_type': 'gemma3', 'text_config': 'small'}", INFER_ERR_FORMAT,
                 "text_config must be an object");
    expect_error("{'model_type': 'gemma3', 'text_config': {'hidden_size': true}}",
                 INFER_ERR_FORMAT, "text_config.hidden_size must be an integer, not a boolean");
    expect_error("{'model_type': 'llama', 'architectures': 'LlamaForCausalLM'}", INFER_ERR_FORMAT,
                 "architectures must be an array");
    expect_error("{'model_type': 'llama', 'architectures': [1]}", INFER_ERR_FORMAT,
                 "architectures[0] must be a string");
    expect_error("{'model_type': 'gemma2', 'final_logit_softcapping': 'on'}", INFER_ERR_FORMAT,
                 "final_logit_softcapping must be a number");
    expect_error("{'model_type': 'qwen2', 'use_sliding_window': 1}", INFER_ERR_FORMAT,
                 "use_sliding_window must be true or false");
    expect_error("{'model_type': 'llama', 'torch_dtype': 16}", INFER_ERR_FORMAT,
                 "torch_dtype must be a string");
    expect_error("{'model_type': 'llama', 'bos_token_id': 'a'}", INFER_ERR_FORMAT,
                 "bos_token_id must be an integer");
}

static void layer_type_errors(void **state)
{
    (void)state;
    expect_error("{'model_type': 'gemma2', 'num_hidden_layers': 4, 'layer_types':"
                 " ['sliding_attention', 'full_attention', 'sliding_attention']}",
                 INFER_ERR_FORMAT, "layer_types has 3 entries but num_hidden_layers is 4");
    expect_error("{'model_type': 'gemma2', 'num_hidden_layers': 2, 'layer_types':"
                 " ['sliding_attention', 'chunked_attention']}",
                 INFER_ERR_FORMAT, "layer_types[1]");
    expect_error("{'model_type': 'gemma3', 'text_config': {'num_hidden_layers': 2,"
                 " 'layer_types': ['sliding_attention', 3]}}",
                 INFER_ERR_FORMAT, "text_config.layer_types[1]");
    expect_error("{'model_type': 'gemma2', 'sliding_window': null}", INFER_ERR_MISSING,
                 "sliding_window is null");
    expect_error("{'model_type': 'qwen2', 'num_hidden_layers': 2, 'sliding_window': 4096,"
                 " 'layer_types': ['full_attention', 'sliding_attention']}",
                 INFER_ERR_MISSING, "use_sliding_window");
    expect_error("{'model_type': 'gemma2', 'sliding_window': 0}", INFER_ERR_FORMAT,
                 "sliding_window must be at least 1");
    expect_error("{'model_type': 'gemma3_text', 'sliding_window_pattern': 0}", INFER_ERR_FORMAT,
                 "sliding_window_pattern");
}

static void nonsense_values(void **state)
{
    (void)state;
    expect_error("{'model_type': 'llama', 'hidden_size': 0}", INFER_ERR_FORMAT,
                 "hidden_size must be at least 1");
    expect_error("{'model_type': 'llama', 'hidden_size': -4096}", INFER_ERR_FORMAT,
                 "hidden_size");
    expect_error("{'model_type': 'llama', 'num_hidden_layers': 0}", INFER_ERR_FORMAT,
                 "num_hidden_layers");
    expect_error("{'model_type': 'llama', 'vocab_size': 0}", INFER_ERR_FORMAT, "vocab_size");
    expect_error("{'model_type': 'llama', 'num_key_value_heads': 5}", INFER_ERR_FORMAT,
                 "num_attention_heads (32) is not a multiple of num_key_value_heads (5)");
    expect_error("{'model_type': 'llama', 'num_attention_heads': 4, 'num_key_value_heads': 8}",
                 INFER_ERR_FORMAT, "num_key_value_heads (8)");
    expect_error("{'model_type': 'qwen3', 'head_dim': 63}", INFER_ERR_FORMAT,
                 "head_dim (63) must be even");
    expect_error("{'model_type': 'llama', 'hidden_size': 100, 'num_attention_heads': 3}",
                 INFER_ERR_FORMAT, "hidden_size (100) is not a multiple of num_attention_heads");
    expect_error("{'model_type': 'llama', 'rms_norm_eps': -1e-5}", INFER_ERR_FORMAT,
                 "rms_norm_eps");
    expect_error("{'model_type': 'llama', 'hidden_size': 1e300}", INFER_ERR_UNSUPPORTED,
                 "hidden_size");
    expect_error("{'model_type': 'llama', 'num_attention_heads': 100000}", INFER_ERR_UNSUPPORTED,
                 "num_attention_heads");
    expect_error("{'model_type': 'gemma2', 'query_pre_attn_scalar': 0}", INFER_ERR_FORMAT,
                 "query_pre_attn_scalar");
    expect_error("{'model_type': 'gemma2', 'attn_logit_softcapping': -50}", INFER_ERR_FORMAT,
                 "attn_logit_softcapping");
    expect_error("{'model_type': 'llama', 'max_position_embeddings': 0}", INFER_ERR_FORMAT,
                 "max_position_embeddings");
}

static void malformed_json(void **state)
{
    (void)state;
    expect_error("{'model_type': 'llama', 'hidden_size': }", INFER_ERR_FORMAT,
                 "invalid JSON at line 1");
    expect_error("{\n  'model_type': 'llama',\n  'attention_bias': tru\n}", INFER_ERR_FORMAT,
                 "invalid JSON at line 3");
    expect_error("{'model_type': 'llama'} {'model_type': 'qwen2'}", INFER_ERR_FORMAT,
                 "unexpected data after the JSON value");
    expect_error("", INFER_ERR_FORMAT, "empty");
    expect_error("['model_type', 'llama']", INFER_ERR_FORMAT, "top level must be an object");

    model_config c;
    const char truncated[] = "{\"model_type\": \"llama\", \"hidden_size\": 2048}";
    assert_int_equal(config_parse(truncated, 20, PATH, &c), INFER_ERR_FORMAT); /* length honoured */
    assert_int_equal(config_parse(truncated, sizeof truncated - 1, NULL, &c), INFER_OK);
    config_free(&c);
    assert_int_equal(config_parse(truncated, 10, PATH, NULL), INFER_ERR_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------------ */
/* Files                                                                */
/* ------------------------------------------------------------------ */

static void load_from_folder(void **state)
{
    (void)state;
    char *dir = test_tmpdir("config");
    assert_non_null(dir);
    model_config c;
    char want[1024];

    assert_int_equal(config_load(dir, &c), INFER_ERR_MISSING);
    snprintf(want, sizeof want, "%s/config.json: no such file", dir);
    assert_string_equal(infer_last_error(), want);
    assert_null(c.layer_sliding);

    char *j = jq(gemma3_1b);
    assert_int_equal(test_write_file(dir, "config.json", j, strlen(j)), 0);
    free(j);
    assert_int_equal(config_load(dir, &c), INFER_OK);
    assert_int_equal(c.hidden_size, 1152);
    config_free(&c);

    char slash[1024];
    snprintf(slash, sizeof slash, "%s/", dir); /* a trailing slash is fine */
    assert_int_equal(config_load(slash, &c), INFER_OK);
    config_free(&c);

    /* Errors name the file. */
    assert_int_equal(test_write_file(dir, "config.json", "{\"model_type\": 1}", 17), 0);
    assert_int_equal(config_load(dir, &c), INFER_ERR_FORMAT);
    snprintf(want, sizeof want, "%s/config.json: model_type", dir);
    assert_true(strncmp(infer_last_error(), want, strlen(want)) == 0);

    test_rmdir(dir);
    free(dir);
}

static void free_is_safe(void **state)
{
    (void)state;
    model_config c;
    memset(&c, 0, sizeof c);
    config_free(&c);
    config_free(NULL);
    parse_ok(gemma2_2b, &c);
    config_free(&c);
    assert_null(c.layer_sliding);
    assert_int_equal(c.n_layers, 0);
    config_free(&c); /* twice */
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(llama_3_2_1b),
    cmocka_unit_test(llama_3_1_8b),
    cmocka_unit_test(qwen2_5_0_5b),
    cmocka_unit_test(qwen3_0_6b),
    cmocka_unit_test(gemma_2_2b),
    cmocka_unit_test(gemma_3_1b),
    cmocka_unit_test(gemma_3_4b_multimodal),
    cmocka_unit_test(new_spelling_same_result),
    cmocka_unit_test(new_spelling_wins),
    cmocka_unit_test(llama_defaults),
    cmocka_unit_test(qwen_defaults),
    cmocka_unit_test(gemma_defaults),
    cmocka_unit_test(rope_spellings),
    cmocka_unit_test(model_type_errors),
    cmocka_unit_test(rope_errors),
    cmocka_unit_test(unsupported_values),
    cmocka_unit_test(wrong_types),
    cmocka_unit_test(layer_type_errors),
    cmocka_unit_test(nonsense_values),
    cmocka_unit_test(malformed_json),
    cmocka_unit_test(load_from_folder),
    cmocka_unit_test(free_is_safe),
};

TEST_GROUP(test_config, tests)
