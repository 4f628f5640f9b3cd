/* make_preset.c - writes a synthetic model folder with the real shapes of
 * a preset from shared/testing.md and random weights.
 *
 *   build/bench/make_preset PRESET OUT_DIR [bf16|f16|f32] [SEED]
 *   build/bench/make_preset --list */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "infer.h"
#include "model/synth.h"

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--list")) {
        for (int i = 0; synth_preset_at(i); i++) puts(synth_preset_at(i)->name);
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: make_preset PRESET OUT_DIR [bf16|f16|f32] [SEED]  (--list for presets)\n");
        return 2;
    }
    const synth_spec *s = synth_preset(argv[1]);
    if (!s) {
        fprintf(stderr, "make_preset: unknown preset '%s' (--list)\n", argv[1]);
        return 2;
    }
    infer_dtype dt = DT_BF16;
    if (argc > 3) {
        if (!strcmp(argv[3], "f16")) dt = DT_F16;
        else if (!strcmp(argv[3], "f32")) dt = DT_F32;
        else if (strcmp(argv[3], "bf16")) {
            fprintf(stderr, "make_preset: dtype must be bf16, f16 or f32\n");
            return 2;
        }
    }
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 1;
    if (mkdir(argv[2], 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "make_preset: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    if (synth_write_model(argv[2], s, dt, seed) != 0) {
        fprintf(stderr, "make_preset: %s\n", infer_last_error());
        return 1;
    }
    return 0;
}
