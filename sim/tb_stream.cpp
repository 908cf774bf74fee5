// fabformer: Verilator testbench that streams a whole data set through the design's top and
// checks every output row inside the simulator (no cocotb, no Python in the loop).
//
// Usage: Vstream IN EXPECTED OUT RESULT n_in_rows n_out_rows valid_prob ready_prob seed max_cycles sel
//   IN, EXPECTED: packed rows, IN_WORDS / OUT_WORDS little-endian 32-bit words per row;
//   OUT: the output rows seen (same layout), then one 64-bit cycle number per output row;
//   RESULT: a JSON summary (cycles, mismatching rows, the first mismatches, timeout).
// Compile-time: IN_W, OUT_W (payload bits), HAS_SEL (a design set's select port).
// Each cycle: after the falling edge drive valid / payload / ready, settle, sample the
// handshakes (a beat transfers when valid and ready before the rising edge), rising edge.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

#define IN_WORDS ((IN_W + 31) / 32)
#define OUT_WORDS ((OUT_W + 31) / 32)

static void set_in(Vtop *t, const uint32_t *w) {
#if IN_W > 64
    for (int k = 0; k < IN_WORDS; k++) t->i___05Fpayload[k] = w[k];
#elif IN_W > 32
    t->i___05Fpayload = ((uint64_t)w[1] << 32) | w[0];
#else
    t->i___05Fpayload = w[0];
#endif
}

static void get_out(Vtop *t, uint32_t *w) {
#if OUT_W > 64
    for (int k = 0; k < OUT_WORDS; k++) w[k] = t->o___05Fpayload[k];
#elif OUT_W > 32
    uint64_t v = t->o___05Fpayload;
    w[0] = (uint32_t)v;
    w[1] = (uint32_t)(v >> 32);
#else
    w[0] = t->o___05Fpayload;
#endif
}

static std::vector<uint32_t> read_words(const char *path, size_t n) {
    std::vector<uint32_t> v(n);
    FILE *f = std::fopen(path, "rb");
    if (!f || std::fread(v.data(), 4, n, f) != n) {
        std::fprintf(stderr, "cannot read %zu words from %s\n", n, path);
        std::exit(2);
    }
    std::fclose(f);
    return v;
}

static uint64_t rng_state;
static double uniform() {  // xorshift64*
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static void hex_row(FILE *f, const uint32_t *w, int words) {
    std::fputc('"', f);
    for (int k = words - 1; k >= 0; k--) std::fprintf(f, "%08x", w[k]);
    std::fputc('"', f);
}

int main(int argc, char **argv) {
    if (argc != 12) {
        std::fprintf(stderr, "usage: %s IN EXPECTED OUT RESULT n_in_rows n_out_rows valid_prob ready_prob "
                     "seed max_cycles sel\n", argv[0]);
        return 2;
    }
    const size_t n_in = std::strtoull(argv[5], 0, 10), n_out = std::strtoull(argv[6], 0, 10);
    const double vp = std::atof(argv[7]), rp = std::atof(argv[8]);
    rng_state = std::strtoull(argv[9], 0, 10) * 0x9E3779B97F4A7C15ULL + 1;
    const uint64_t max_cycles = std::strtoull(argv[10], 0, 10);
    std::vector<uint32_t> in = read_words(argv[1], n_in * IN_WORDS);
    std::vector<uint32_t> exp = read_words(argv[2], n_out * OUT_WORDS);
    std::vector<uint32_t> got(n_out * OUT_WORDS);
    std::vector<uint64_t> out_cycles(n_out);

    VerilatedContext *ctx = new VerilatedContext;
    Vtop *top = new Vtop(ctx);
#ifdef HAS_SEL
    top->sel = std::atoi(argv[11]);
#endif
    top->clk = 0;
    top->rst = 1;
    top->i___05Fvalid = 0;
    top->o___05Fready = 0;
    top->eval();
    for (int k = 0; k < 3; k++) {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
    }
    top->rst = 0;

    uint64_t cycle = 0, first_in = 0;
    size_t pos_in = 0, pos_out = 0, bad_rows = 0;
    std::vector<size_t> bad_at;
    bool timeout = false;
    while (pos_in < n_in || pos_out < n_out) {
        if (cycle > max_cycles) {
            timeout = true;
            break;
        }
        const bool offer = pos_in < n_in && (vp >= 1.0 || uniform() < vp);
        top->i___05Fvalid = offer;
        if (offer) set_in(top, &in[pos_in * IN_WORDS]);
        const bool ready = rp >= 1.0 || uniform() < rp;
        top->o___05Fready = ready;
        top->eval();
        if (offer && top->i___05Fready) {
            if (pos_in == 0) first_in = cycle;
            pos_in++;
        }
        if (ready && top->o___05Fvalid) {
            if (pos_out < n_out) {
                uint32_t *g = &got[pos_out * OUT_WORDS];
                get_out(top, g);
                out_cycles[pos_out] = cycle;
                if (std::memcmp(g, &exp[pos_out * OUT_WORDS], OUT_WORDS * 4) != 0) {
                    if (bad_at.size() < 20) bad_at.push_back(pos_out);
                    bad_rows++;
                }
            } else {
                bad_rows++;  // an extra row
            }
            pos_out++;
        }
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        cycle++;
    }
    top->final();

    FILE *fo = std::fopen(argv[3], "wb");
    if (!fo) return 2;
    std::fwrite(got.data(), 4, got.size(), fo);
    std::fwrite(out_cycles.data(), 8, out_cycles.size(), fo);
    std::fclose(fo);
    FILE *fr = std::fopen(argv[4], "w");
    if (!fr) return 2;
    std::fprintf(fr, "{\"cycles\": %llu, \"first_in_cycle\": %llu, \"in_rows\": %zu, \"out_rows\": %zu, "
                 "\"mismatched_rows\": %zu, \"timeout\": %s, \"first_mismatches\": [",
                 (unsigned long long)cycle, (unsigned long long)first_in, pos_in, pos_out, bad_rows,
                 timeout ? "true" : "false");
    for (size_t k = 0; k < bad_at.size(); k++) {
        std::fprintf(fr, "%s{\"row\": %zu, \"expected\": ", k ? ", " : "", bad_at[k]);
        hex_row(fr, &exp[bad_at[k] * OUT_WORDS], OUT_WORDS);
        std::fprintf(fr, ", \"actual\": ");
        hex_row(fr, &got[bad_at[k] * OUT_WORDS], OUT_WORDS);
        std::fputc('}', fr);
    }
    std::fprintf(fr, "]}\n");
    std::fclose(fr);
    delete top;
    delete ctx;
    return bad_rows || timeout ? 1 : 0;
}
