/* test_core.c - dtype conversions and error messages. */
#include <math.h>
#include <string.h>

#include "core/dtype.h"
#include "core/error.h"
#include "test.h"

static void bf16_round_trip(void **state)
{
    (void)state;
    /* Values checked by hand against torch.tensor(x).bfloat16(). */
    assert_int_equal(f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(f32_to_bf16(1.00390625f), 0x3f80);  /* tie to even: down */
    assert_int_equal(f32_to_bf16(1.01171875f), 0x3f82);  /* tie to even: up */
    assert_true(isnan(bf16_to_f32(f32_to_bf16(NAN))));
    assert_true(bf16_to_f32(0x3f80) == 1.0f);
}

static void f16_round_trip(void **state)
{
    (void)state;
    assert_int_equal(f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(f32_to_f16(-2.5f), 0xc100);
    assert_int_equal(f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(f32_to_f16(1e6f), 0x7c00);
    assert_true(f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(f16_to_f32(0x3555) == 0.333251953125f);
    for (unsigned h = 0; h < 0x7c00; h++) /* every finite positive half */
        assert_int_equal(f32_to_f16(f16_to_f32((uint16_t)h)), h);
}

static void unaligned_convert(void **state)
{
    (void)state;
    unsigned char buf[16];
    uint16_t v[3] = {0x3f80, 0x4000, 0xbf80};
    memcpy(buf + 1, v, sizeof v); /* odd address */
    float out[3];
    dtype_to_f32(out, buf + 1, DT_BF16, 3);
    assert_true(out[0] == 1.0f && out[1] == 2.0f && out[2] == -1.0f);
}

static void dtype_names(void **state)
{
    (void)state;
    assert_int_equal(dtype_parse("BF16"), DT_BF16);
    assert_int_equal(dtype_parse("BOOL"), DT_BOOL);
    assert_int_equal(dtype_parse("F8_E4M3"), -1);
    assert_int_equal(dtype_size(DT_U32), 4);
}

static void error_messages(void **state)
{
    (void)state;
    assert_int_equal(infer_err(INFER_ERR_FORMAT, "%s: bad", "x.json"), INFER_ERR_FORMAT);
    assert_string_equal(infer_last_error(), "x.json: bad");
    infer_err_prefix(INFER_ERR_FORMAT, "dir");
    assert_string_equal(infer_last_error(), "dir: x.json: bad");
    assert_string_equal(infer_status_name(INFER_ERR_SHAPE), "INFER_ERR_SHAPE");
    assert_string_equal(infer_version(), INFER_VERSION_STRING);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(bf16_round_trip), cmocka_unit_test(f16_round_trip),
    cmocka_unit_test(unaligned_convert), cmocka_unit_test(dtype_names),
    cmocka_unit_test(error_messages),
};

TEST_GROUP(test_core, tests)
