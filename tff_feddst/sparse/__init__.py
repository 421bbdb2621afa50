"""What the server and the clients both know: the model's layout and the wire formats.

Every format that crosses a placement boundary has one name here:
`SparsePayload` (live values, packed masks, dense params; both ways),
`ImportanceUpload` (PruneFL's payload plus importance; `codec`) and the DP
delta (`flat_update`: one fixed-length vector in global-mask order). No
module here imports TFF; templates/, aggregators/ and privacy/ import them,
never each other's internals.
"""

from tff_feddst.sparse import codec
from tff_feddst.sparse import flat_update
from tff_feddst.sparse import layout
from tff_feddst.sparse.codec import ImportanceUpload
from tff_feddst.sparse.codec import SparsePayload
from tff_feddst.sparse.layout import ModelLayout
