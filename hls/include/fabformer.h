// fabformer HLS kernel library: one kernel per IR op kind (see fabformer/ir.py).
#ifndef FABFORMER_H
#define FABFORMER_H

#include <cmath>

#include "fab_common.h"
#include "fab_dense.h"
#include "fab_elementwise.h"
#include "fab_extra.h"
#include "fab_layout.h"
#include "fab_normalize.h"

#endif
