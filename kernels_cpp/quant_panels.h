// The int8 GEMM's activation panel layout, shared by the kernels that write panels (QPACK in
// quant.cpp, QDYNPACK in quant_dynamic.cpp) and the GEMM that reads them (QCONV2D has its own
// pixels-in-lanes panels: kNR / kMR in quant.cpp): declared once,
// because a writer and the reader that disagree give wrong numbers, not a trap.
#pragma once

namespace quant_panels {
constexpr int kCols = 4;    // columns per activation panel
constexpr int kKBlock = 8;  // k elements per dot_i16x8 step
}  // namespace quant_panels
