#include "api_health.h"

void api_healthz(api_request *r) { http_reply_json(r->req, 200, json_pack("{s:s}", "status", "ok")); }
