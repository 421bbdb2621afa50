"""What the server and the clients both know: the model's layout and the wire format.

Neither module imports TFF; templates/ and aggregators/ import them, never
each other's internals.
"""

from tff_feddst.sparse import codec
from tff_feddst.sparse import layout
from tff_feddst.sparse.codec import ImportanceUpload
from tff_feddst.sparse.codec import SparsePayload
from tff_feddst.sparse.layout import ModelLayout
