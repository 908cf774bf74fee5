"""The I/O shell that makes a model usable on a real board: UART in, UART out.

One sample at a time (the frame format is :mod:`fabformer.boards.protocol`):

1. the host sends ``SYNC_IN`` and then every input element, row by row, each
   element as ``ceil(width / 8)`` little-endian bytes (two's complement);
2. the shell stores the rows, then streams them into the model at full clock
   rate and stores the output rows as the model produces them, counting the
   clock cycles from the first input beat offered (cycle 0) to the last output
   beat taken: the same definition as the design's ``latency_cycles``, so on a
   stall-free model the two are equal;
3. it answers ``SYNC_OUT``, every output element (``ceil(width / 8)`` bytes each,
   little-endian, the upper bits zero: the host sign-extends) and the cycle
   count as 4 little-endian bytes.

Where the time of one sample goes (``D`` = clock cycles per UART bit, 10 bits a
byte, ``L`` = ``latency_cycles``; :func:`shell_cycles` computes it):

- receive: ``10 * D * request_len`` cycles on the wire (``1 + in_rows * in_cols *
  ceil(in_width / 8)`` bytes);
- compute: ``1 + L + 1`` cycles, ``1`` for the input memory's read port before the
  first beat, ``L`` counted and reported, ``1`` to leave the run state;
- send: ``10 * D * answer_len`` cycles (``1 + out_rows * out_cols * ceil(out_width /
  8) + 4`` bytes; the output memory's read-port cycles overlap the transmission).

Receive and send are UART times to within a bit time (the receiver samples mid-bit);
the reported count is exact.

So at 115200 baud the UART, not the model, bounds the throughput of a board
(``baud / (10 * (request_len + answer_len))`` samples/s); the reported count is
what the model itself takes.

Ports: ``rx`` / ``tx`` (idle high, 8N1), ``led_alive`` (blinks while the clock
runs and the design is out of reset) and ``led_busy`` (on while a sample is
being received, computed or sent).
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from ..errors import FabformerError

SYNC_IN = 0x5A
SYNC_OUT = 0xA5
CYCLE_BYTES = 4


def bytes_per_element(width: int) -> int:
    return (width + 7) // 8


def shell_cycles(latency_cycles: int, *, in_rows, in_cols, in_width, out_rows, out_cols, out_width,
                 divisor: int) -> dict:
    """Clock cycles of one sample through the shell (see the module docstring).

    ``reported`` is the count the shell sends back (= ``latency_cycles``);
    ``receive`` / ``compute`` / ``send`` are the phases, ``total`` their sum.
    """
    req = 1 + in_rows * in_cols * bytes_per_element(in_width)
    ans = 1 + out_rows * out_cols * bytes_per_element(out_width) + CYCLE_BYTES
    receive, send = 10 * divisor * req, 10 * divisor * ans
    compute = 1 + latency_cycles + 1
    return {"reported": latency_cycles, "receive": receive, "compute": compute, "send": send,
            "total": receive + compute + send, "request_bytes": req, "answer_bytes": ans}



def _check_divisor(divisor: int) -> int:
    if divisor < 4:
        raise FabformerError(f"UART divisor must be >= 4 clock cycles per bit, not {divisor}")
    return divisor

class UARTRx(wiring.Component):
    """8N1 receiver: ``valid`` pulses one cycle with ``data`` after each stop bit."""

    rx: In(1, init=1)
    data: Out(8)
    valid: Out(1)

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        s1, s2 = Signal(init=1), Signal(init=1)
        m.d.sync += [s1.eq(self.rx), s2.eq(s1)]
        timer = Signal(range(d + d // 2 + 1))
        bits = Signal(range(10))
        shreg = Signal(8)
        m.d.sync += self.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~s2):
                    m.d.sync += [timer.eq(d // 2), bits.eq(0)]
                    m.next = "START"
            with m.State("START"):  # re-check the start bit in its middle
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(s2):
                    m.next = "IDLE"  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += timer.eq(d - 1)
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), shreg.eq(Cat(shreg[1:], s2)), bits.eq(bits + 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(s2):  # a framing error (low stop bit) drops the byte
                        m.d.sync += [self.data.eq(shreg), self.valid.eq(1)]
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter with a valid/ready byte input."""

    data: In(8)
    valid: In(1)
    ready: Out(1)
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        shreg = Signal(10, init=0x3FF)
        left = Signal(range(11))
        m.d.comb += [self.ready.eq(left == 0), self.tx.eq(shreg[0])]
        with m.If(left == 0):
            with m.If(self.valid):
                m.d.sync += [shreg.eq(Cat(Const(0, 1), self.data, Const(1, 1))), left.eq(10),
                             timer.eq(self.divisor - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), left.eq(left - 1),
                         timer.eq(self.divisor - 1)]
        return m


class UARTShell(wiring.Component):
    """The model between a UART receiver and transmitter (see the module docstring).

    ``model`` has ``i`` / ``o`` streams of rows (``in_cols`` elements of
    ``in_width`` bits, ``out_cols`` of ``out_width``); a sample is ``in_rows``
    input beats and ``out_rows`` output beats.  ``divisor`` is clock cycles per
    UART bit; ``blink_bits`` sets the alive LED period (``2**blink_bits`` cycles).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    led_alive: Out(1)
    led_busy: Out(1)

    def __init__(self, model, *, in_rows, in_cols, in_width, out_rows, out_cols, out_width,
                 divisor: int, blink_bits: int = 23, holds_output: bool = False, peek=None):
        self.model = model
        # ``peek`` = (first word, elements a word, bits an element): the model (``peek_addr`` /
        # ``peek_data``) lets the shell read its one output row from its data memory between samples
        self.peek = peek if holds_output and out_rows == 1 else None
        # a model that holds its one output row until its next sample (the compact engine) is read
        # while the answer is sent: no output memory
        self.holds_output = holds_output and out_rows == 1
        self.in_rows, self.in_cols, self.in_width = in_rows, in_cols, in_width
        self.out_rows, self.out_cols, self.out_width = out_rows, out_cols, out_width
        self.divisor = divisor
        self.blink_bits = blink_bits
        super().__init__()

    @classmethod
    def for_design(cls, design, divisor: int, **kw):
        peek = getattr(design, "peek_output", None) if design.out_rows == 1 else None
        model = design.make_top(peek=True) if peek is not None and getattr(design, "holds_output", False) \
            else design.top
        return cls(model, in_rows=design.in_rows, in_cols=design.in_cols, in_width=design.in_type.width,
                   out_rows=design.out_rows, out_cols=design.out_cols, out_width=design.out_type.width,
                   divisor=divisor, holds_output=getattr(design, "holds_output", False),
                   peek=peek if model is not design.top else None, **kw)

    def elaborate(self, platform):
        m = Module()
        m.submodules.model = model = self.model
        m.submodules.urx = urx = UARTRx(self.divisor)
        m.submodules.utx = utx = UARTTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        iw, ow = self.in_width, self.out_width
        ib, ob = bytes_per_element(iw), bytes_per_element(ow)
        row_bytes_in, row_bytes_out = self.in_cols * ib, self.out_cols * ob

        m.submodules.imem = imem = memory.Memory(shape=self.in_cols * iw, depth=max(self.in_rows, 2), init=[])
        # whole-byte elements: the received bytes are the row's bytes, written into it one at a time
        byte_rows = iw % 8 == 0
        iwr, ird = imem.write_port(granularity=8 if byte_rows else None), imem.read_port()
        if self.peek is not None:
            out_data = None
        elif self.holds_output:
            out_data = model.o.payload.as_value()
        else:
            m.submodules.omem = omem = memory.Memory(shape=self.out_cols * ow, depth=self.out_rows, init=[])
            owr, ord_ = omem.write_port(), omem.read_port()
            out_data = ord_.data

        # alive LED: a free-running counter's top bit
        blink = Signal(self.blink_bits)
        m.d.sync += blink.eq(blink + 1)
        m.d.comb += self.led_alive.eq(blink[-1])

        # -- receive: bytes -> rows ------------------------------------------------
        byte_i = Signal(range(row_bytes_in + 1))
        row_i = Signal(range(self.in_rows + 1))
        m.d.comb += iwr.addr.eq(row_i)
        if byte_rows:
            m.d.comb += iwr.data.eq(Cat(*([urx.data] * row_bytes_in)))
        else:
            rowbuf = Signal(row_bytes_in * 8)
            nxt = Signal(row_bytes_in * 8)
            m.d.comb += [nxt.eq(Cat(rowbuf[8:], urx.data)),
                         iwr.data.eq(Cat(*(nxt[j * ib * 8: j * ib * 8 + iw] for j in range(self.in_cols))))]

        # -- run: rows -> model -> rows -------------------------------------------
        rd_ptr = Signal(range(self.in_rows + 1))
        ivalid = Signal()
        wr_ptr = Signal(range(self.out_rows + 1))
        cycles = Signal(32)  # counts from the first input beat offered to the last output beat, then holds
        counting = Signal()
        # The count's control reaches the 32-bit counter through two registers, each loaded a cycle
        # before it acts: ``count_inc`` (this cycle counts) and ``count_clear`` (the shell waits for a
        # request).  Every counted cycle lands one cycle later, and the total is the same by the time
        # it is sent (SEND_CYCLES comes at least two cycles after RUN).  The decode of the state, the UART's valid and the model's
        # output no longer drives the counter's carry chain (a 100 MHz ULX3S build routed that path
        # with 11.4 ns).
        count_inc = Signal()
        count_clear = Signal()
        inc_now = Signal()
        clear_now = Signal()
        m.d.sync += [count_inc.eq(inc_now), count_clear.eq(clear_now),
                     cycles.eq(Mux(count_clear, 0, cycles + count_inc))]
        advance = Signal()
        m.d.comb += [advance.eq(~ivalid | model.i.ready),
                     ird.addr.eq(rd_ptr),
                     model.i.valid.eq(ivalid),
                     model.i.payload.as_value().eq(ird.data)]
        if not self.holds_output:
            m.d.comb += [owr.addr.eq(wr_ptr), owr.data.eq(model.o.payload.as_value())]

        # -- send: rows -> bytes ---------------------------------------------------
        tx_byte = Signal(range(max(row_bytes_out, CYCLE_BYTES) + 1))
        if self.peek is not None:  # the element's byte from the word the model's read port gives
            p_base, p_lanes, p_w = self.peek
            tx_word = Signal(range(-(-self.out_cols // p_lanes) + 1))
            tx_lane = Signal(range(max(p_lanes, 2)))
            tx_b = Signal(range(max(ob, 2)))
            m.d.comb += model.peek_addr.eq(p_base + tx_word)
            elem = model.peek_data.word_select(tx_lane, p_w)
            tx_data = Cat(elem[:ow], Const(0, ob * 8 - ow)).word_select(tx_b, 8) if ob > 1 else elem[:ow]
        else:
            padded = Cat(*(Cat(out_data[j * ow:(j + 1) * ow], Const(0, ob * 8 - ow)) for j in range(self.out_cols)))
            tx_data = padded.word_select(tx_byte, 8)
        tx_row = Signal(range(self.out_rows + 1))
        if not self.holds_output:
            m.d.comb += ord_.addr.eq(tx_row)

        with m.FSM():
            with m.State("WAIT"):
                # the count is cleared while the shell waits for a request: a decode of the state
                # alone (clearing it at the end of RECEIVE shared the input memory's write-enable
                # logic, 8.8 ns of routing in a 100 MHz ULX3S build)
                m.d.comb += clear_now.eq(1)
                with m.If(urx.valid & (urx.data == SYNC_IN)):
                    m.d.sync += [byte_i.eq(0), row_i.eq(0)]
                    m.next = "RECEIVE"
            with m.State("RECEIVE"):
                m.d.comb += self.led_busy.eq(1)
                with m.If(urx.valid):
                    if byte_rows:
                        m.d.comb += iwr.en.eq(Const(1, row_bytes_in) << byte_i)
                    else:
                        m.d.sync += rowbuf.eq(nxt)
                    with m.If(byte_i == row_bytes_in - 1):
                        if not byte_rows:
                            m.d.comb += iwr.en.eq(1)
                        m.d.sync += [byte_i.eq(0), row_i.eq(row_i + 1)]
                        with m.If(row_i == self.in_rows - 1):
                            m.d.sync += [rd_ptr.eq(0), wr_ptr.eq(0), counting.eq(0), ivalid.eq(0)]
                            m.next = "RUN"
                    with m.Else():
                        m.d.sync += byte_i.eq(byte_i + 1)
            with m.State("RUN"):
                m.d.comb += [self.led_busy.eq(1), model.o.ready.eq(1), ird.en.eq(advance)]
                with m.If(ivalid | counting):  # cycle 0: the first input beat is offered
                    m.d.comb += inc_now.eq(1)
                    m.d.sync += counting.eq(1)
                with m.If(advance):
                    with m.If(rd_ptr != self.in_rows):
                        m.d.sync += [ivalid.eq(1), rd_ptr.eq(rd_ptr + 1)]
                    with m.Else():
                        m.d.sync += ivalid.eq(0)
                with m.If(model.o.valid):
                    if not self.holds_output:
                        m.d.comb += owr.en.eq(1)
                    m.d.sync += wr_ptr.eq(wr_ptr + 1)
                    with m.If(wr_ptr == self.out_rows - 1):
                        m.d.comb += inc_now.eq(0)
                        m.d.sync += [counting.eq(0), ivalid.eq(0)]
                        m.next = "SEND_SYNC"
            with m.State("SEND_SYNC"):
                m.d.comb += [self.led_busy.eq(1), utx.data.eq(SYNC_OUT), utx.valid.eq(1)]
                with m.If(utx.ready):
                    m.d.sync += [tx_row.eq(0), tx_byte.eq(0)]
                    if self.peek is not None:
                        m.d.sync += [tx_word.eq(0), tx_lane.eq(0), tx_b.eq(0)]
                    m.next = "SEND_FETCH"
            with m.State("SEND_FETCH"):  # one cycle for the read port
                m.d.comb += self.led_busy.eq(1)
                if not self.holds_output:
                    m.d.comb += ord_.en.eq(1)
                m.next = "SEND_ROW"
            with m.State("SEND_ROW"):
                m.d.comb += [self.led_busy.eq(1), utx.data.eq(tx_data), utx.valid.eq(1)]
                with m.If(utx.ready):
                    if self.peek is not None:
                        with m.If(tx_b == ob - 1):
                            m.d.sync += tx_b.eq(0)
                            with m.If(tx_lane == p_lanes - 1):
                                m.d.sync += [tx_lane.eq(0), tx_word.eq(tx_word + 1)]
                            with m.Else():
                                m.d.sync += tx_lane.eq(tx_lane + 1)
                        with m.Else():
                            m.d.sync += tx_b.eq(tx_b + 1)
                    with m.If(tx_byte == row_bytes_out - 1):
                        m.d.sync += [tx_byte.eq(0), tx_row.eq(tx_row + 1)]
                        with m.If(tx_row == self.out_rows - 1):
                            m.next = "SEND_CYCLES"
                        with m.Else():
                            m.next = "SEND_FETCH"
                    with m.Else():
                        m.d.sync += tx_byte.eq(tx_byte + 1)
            with m.State("SEND_CYCLES"):
                m.d.comb += [self.led_busy.eq(1), utx.data.eq(cycles.word_select(tx_byte[:2], 8)),
                             utx.valid.eq(1)]
                with m.If(utx.ready):
                    m.d.sync += tx_byte.eq(tx_byte + 1)
                    with m.If(tx_byte == CYCLE_BYTES - 1):
                        m.next = "WAIT"
        return m
