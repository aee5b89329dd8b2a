"""The SCTP stage: ``test_stage.py`` boots the guest of ``vm/`` once and runs ``guest/`` in it.

``guest/`` changes the network of the kernel it runs in (addresses on lo, routing rules that cut
a path) and needs SCTP: it is collected only inside the guest, where ``EIR_SCTP_GUEST=1``.
"""

import os

collect_ignore = [] if os.environ.get("EIR_SCTP_GUEST") == "1" else ["guest"]
