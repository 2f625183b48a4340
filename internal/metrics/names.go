package metrics

import (
	"strings"

	"github.com/kwikfs/kwikfs/transfer"
)

// opLabel returns the op label of requests of type op: the protocol name
// in lower case ("stat", "report_corrupt"), "invalid" for 0 (a request not
// decoded or not received whole).
func opLabel(op transfer.Op) string {
	switch op {
	case 0:
		return "invalid"
	case transfer.OpReportCorrupt:
		return "report_corrupt"
	case transfer.OpPathReport:
		return "path_report"
	}
	return strings.ToLower(op.String())
}

// statusLabels are the status label values of error replies, by
// transfer.Status.
var statusLabels = [transfer.NumStatus]string{
	transfer.StatusOK:          "ok",
	transfer.StatusNotFound:    "not_found",
	transfer.StatusNotDir:      "not_dir",
	transfer.StatusIsDir:       "is_dir",
	transfer.StatusOutsideRoot: "outside_root",
	transfer.StatusPermission:  "permission",
	transfer.StatusStale:       "stale",
	transfer.StatusBadRequest:  "bad_request",
	transfer.StatusTooLarge:    "too_large",
	transfer.StatusInternal:    "internal",
	transfer.StatusCorrupt:     "corrupt",
	transfer.StatusUnavailable: "unavailable",
}
