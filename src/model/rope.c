/* rope.c - RoPE inverse frequencies for each scaling rule, as transformers'
 * rope utilities compute them (in float32). */
#include <math.h>

#include "model/model.h"

static void default_freq(double theta, int head_dim, float *out)
{
    for (int i = 0; i < head_dim / 2; i++) {
        float e = (float)(2 * i) / (float)head_dim;
        out[i] = (float)(1.0 / pow(theta, (double)e));
    }
}

/* Llama 3: frequencies whose wavelength is longer than
 * original_max_position / low_freq_factor are divided by factor, those
 * shorter than original_max_position / high_freq_factor are kept, and the
 * ones between are blended. */
static void llama3_scale(const rope_config *rc, int n, float *f)
{
    double old_ctx = rc->original_max_position;
    double low_wl = old_ctx / rc->low_freq_factor;
    double high_wl = old_ctx / rc->high_freq_factor;
    for (int i = 0; i < n; i++) {
        float inv = f[i];
        float wavelen = 2.0f * (float)M_PI / inv;
        float scaled = wavelen > (float)low_wl ? inv / (float)rc->factor : inv;
        if (!(wavelen < (float)high_wl) && !(wavelen > (float)low_wl)) {
            float smooth = ((float)old_ctx / wavelen - (float)rc->low_freq_factor) /
                           (float)(rc->high_freq_factor - rc->low_freq_factor);
            scaled = (1.0f - smooth) * scaled / (float)rc->factor + smooth * scaled;
        }
        f[i] = scaled;
    }
}

void rope_inv_freq(const rope_config *rc, int head_dim, int max_position, int seq_len, float *out)
{
    int n = head_dim / 2;
    switch (rc->kind) {
    case ROPE_LINEAR:
        default_freq(rc->theta, head_dim, out);
        for (int i = 0; i < n; i++) out[i] = out[i] / (float)rc->factor;
        break;
    case ROPE_LLAMA3:
        default_freq(rc->theta, head_dim, out);
        llama3_scale(rc, n, out);
        break;
    case ROPE_DYNAMIC: {
        /* NTK-aware: past max_position the base grows with the length. */
        double base = rc->theta;
        if (seq_len > max_position) {
            double s = rc->factor * seq_len / max_position - (rc->factor - 1.0);
            base = rc->theta * pow(s, (double)head_dim / (head_dim - 2));
        }
        default_freq(base, head_dim, out);
        break;
    }
    case ROPE_DEFAULT:
    default:
        default_freq(rc->theta, head_dim, out);
        break;
    }
}
