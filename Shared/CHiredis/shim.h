#ifndef HAILSTORM_CHIREDIS_SHIM_H
#define HAILSTORM_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#endif
