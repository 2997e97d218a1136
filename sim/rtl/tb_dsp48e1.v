// hwbed: drive yosys' DSP48E1 simulation model (techlibs/xilinx/cells_sim.v) from a vector
// file.  All input and pipeline registers are bypassed and PREG = 1, so each clock edge
// computes P(t+1) = f(inputs(t), P(t)).
//
// Vector file (+vec=PATH), one vector per line, hex fields separated by spaces:
//   C A B D PCIN OPMODE ALUMODE INMODE CARRYINSEL CARRYIN CARRYCASCIN
// Output file (+out=PATH), one line per vector: P (hex) CARRYOUT (bin) PATTERNDETECT
// PATTERNBDETECT.  +n=N gives the number of vectors.
//
// Drivers are not initialised: the model's bypass paths are `always @*` blocks that fire
// only on a change, so every input (constants included) is first assigned after time 0.
`timescale 1ns / 1ps
module tb;
    parameter USE_SIMD = "ONE48";
    parameter USE_DPORT = "FALSE";
    parameter USE_MULT = "MULTIPLY";
    parameter [47:0] PATTERN = 48'h0;
    parameter [47:0] MASK = 48'h3FFFFFFFFFFF;

    reg CLK;
    reg [47:0] C, PCIN;
    reg [29:0] A;
    reg [17:0] B;
    reg [24:0] D;
    reg [6:0] OPMODE;
    reg [3:0] ALUMODE;
    reg [4:0] INMODE;
    reg [2:0] CARRYINSEL;
    reg CARRYIN, CARRYCASCIN, CE, RST;
    wire [47:0] P;
    wire [3:0] CARRYOUT;
    wire PATTERNDETECT, PATTERNBDETECT;

    DSP48E1 #(
        .AREG(0), .ACASCREG(0), .BREG(0), .BCASCREG(0), .CREG(0), .DREG(0), .ADREG(0),
        .MREG(0), .PREG(1), .OPMODEREG(0), .ALUMODEREG(0), .INMODEREG(0), .CARRYINREG(0),
        .CARRYINSELREG(0), .A_INPUT("DIRECT"), .B_INPUT("DIRECT"), .USE_DPORT(USE_DPORT),
        .USE_MULT(USE_MULT), .USE_SIMD(USE_SIMD), .USE_PATTERN_DETECT("PATDET"),
        .AUTORESET_PATDET("NO_RESET"), .SEL_MASK("MASK"), .SEL_PATTERN("PATTERN"),
        .PATTERN(PATTERN), .MASK(MASK)
    ) dut (
        .CLK(CLK), .A(A), .B(B), .C(C), .D(D), .PCIN(PCIN), .ACIN(30'b0), .BCIN(18'b0),
        .OPMODE(OPMODE), .ALUMODE(ALUMODE), .INMODE(INMODE), .CARRYINSEL(CARRYINSEL),
        .CARRYIN(CARRYIN), .CARRYCASCIN(CARRYCASCIN), .MULTSIGNIN(1'b0),
        .CEA1(CE), .CEA2(CE), .CEAD(CE), .CEALUMODE(CE), .CEB1(CE), .CEB2(CE), .CEC(CE),
        .CECARRYIN(CE), .CECTRL(CE), .CED(CE), .CEINMODE(CE), .CEM(CE), .CEP(CE),
        .RSTA(RST), .RSTALLCARRYIN(RST), .RSTALUMODE(RST), .RSTB(RST), .RSTC(RST),
        .RSTCTRL(RST), .RSTD(RST), .RSTINMODE(RST), .RSTM(RST), .RSTP(RST),
        .P(P), .CARRYOUT(CARRYOUT), .PATTERNDETECT(PATTERNDETECT),
        .PATTERNBDETECT(PATTERNBDETECT)
    );

    reg [1023:0] vec_path, out_path;
    integer fin, fout, n, i, got;

    initial begin
        if (!$value$plusargs("vec=%s", vec_path)) $fatal(1, "missing +vec=");
        if (!$value$plusargs("out=%s", out_path)) $fatal(1, "missing +out=");
        if (!$value$plusargs("n=%d", n)) $fatal(1, "missing +n=");
        fin = $fopen(vec_path, "r");
        fout = $fopen(out_path, "w");
        if (fin == 0 || fout == 0) $fatal(1, "cannot open vector or output file");
        #1 CLK = 0; CE = 1; RST = 0;
        for (i = 0; i < n; i = i + 1) begin
            got = $fscanf(fin, "%h %h %h %h %h %h %h %h %h %h %h\n", C, A, B, D, PCIN, OPMODE,
                          ALUMODE, INMODE, CARRYINSEL, CARRYIN, CARRYCASCIN);
            if (got != 11) $fatal(1, "vector %0d: read %0d fields", i, got);
            #5 CLK = 1;
            #1 $fdisplay(fout, "%h %b %b %b", P, CARRYOUT, PATTERNDETECT, PATTERNBDETECT);
            #4 CLK = 0;
        end
        $fclose(fin);
        $fclose(fout);
        $finish;
    end
endmodule
