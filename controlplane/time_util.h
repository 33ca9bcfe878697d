/* time_util: RFC 3339 timestamps for the REST API.
 *
 * Contract: the control plane keeps times as microseconds since the Unix
 * epoch (int64, UTC) and formats them as "YYYY-MM-DDTHH:MM:SS.ffffffZ".
 * Formatting never fails for years 0..9999; outside that range it returns -1
 * and leaves an error. (Nothing parses timestamps: clients send none.) */
#ifndef TORPOR_CP_TIME_UTIL_H
#define TORPOR_CP_TIME_UTIL_H

#include <stdint.h>

#include "terr.h"

#define TIME_RFC3339_LEN 32 /* buffer size for time_util_format_rfc3339 */

int time_util_format_rfc3339(int64_t unix_us, char out[TIME_RFC3339_LEN], terr *err);

#endif
