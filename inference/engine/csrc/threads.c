/* The OpenMP runtime's thread teams. */
#include <omp.h>

#include "kernels.h"

/* libgomp keeps a team of threads for every thread that ever ran a parallel region, for as long as
 * that thread lives, and pauses the calling thread's team only. With more of its threads alive
 * than there are CPUs it stops spinning between regions and wakes each team by futex instead, which
 * on two cores doubled a decode step. So the thread that loads the model releases its team, and the
 * step loop's thread is left the only one. */
int release_threads(void) { return omp_pause_resource_all(omp_pause_soft); }
